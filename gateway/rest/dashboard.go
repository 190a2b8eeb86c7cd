package rest

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"time"
)

// dashboardFiles is the dashboard page and its assets: plain HTML, CSS and
// JavaScript, with no build step and nothing loaded from elsewhere.
//
//go:embed dashboard
var dashboardFiles embed.FS

// dashboardCSP is the Content-Security-Policy sent with every dashboard
// response. Script, style and images come from the gateway alone, never
// inline; the page talks to no origin but its own; it cannot be framed; and
// Trusted Types forbid HTML built from strings, so text from the API (names,
// reasons, errors) can only ever land in the page as text.
const dashboardCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

// Dashboard serves the live operations page: GET / is the page, and
// GET /dashboard/{file} its script, style sheet and icon, all embedded in
// the binary. The page itself holds no data: it polls the REST API from the
// browser (GET /v1/functions and /v1/functions/{name} every second, and
// GET /v1/jobs/{id} for a job looked up), so it shows exactly what the API
// lets its caller see, and with tenants it asks for an API key, which it
// keeps in the tab's sessionStorage and sends as Authorization: Bearer.
//
// Every response carries a strict Content-Security-Policy (no inline script
// or style, nothing from another origin, no framing, Trusted Types),
// X-Content-Type-Options: nosniff, and a strong ETag of its content with Cache-Control: no-cache: a browser
// keeps the files but asks each time whether they changed (304 when not),
// so a new binary's page is picked up at once. Other paths get 404.
//
// A Dashboard is safe for concurrent use; it never changes after
// [NewDashboard].
type Dashboard struct {
	files map[string]dashboardFile // by URL path
}

var _ http.Handler = (*Dashboard)(nil)

// dashboardFile is one embedded file, ready to serve.
type dashboardFile struct {
	name        string // for http.ServeContent
	contentType string
	etag        string
	body        []byte
}

// dashboardTypes are the content types of the files the dashboard serves;
// explicit rather than from the system's MIME table, which varies.
var dashboardTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// NewDashboard returns the dashboard handler. It panics if the embedded
// files are unusable, which only a broken build can cause.
func NewDashboard() *Dashboard {
	d := &Dashboard{files: make(map[string]dashboardFile)}
	err := fs.WalkDir(dashboardFiles, "dashboard", func(name string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		ct, ok := dashboardTypes[path.Ext(name)]
		if !ok {
			return fmt.Errorf("no content type for %s", name)
		}
		body, err := dashboardFiles.ReadFile(name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		f := dashboardFile{
			name:        name,
			contentType: ct,
			etag:        `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`,
			body:        body,
		}
		urlPath := "/" + name
		if name == "dashboard/index.html" {
			urlPath = "/"
		}
		d.files[urlPath] = f
		return nil
	})
	if err != nil || d.files["/"].body == nil {
		panic(fmt.Sprintf("rest: embedded dashboard: %v", err))
	}
	return d
}

// ServeHTTP serves GET and HEAD of the page and its assets, answering
// If-None-Match with 304.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	f, ok := d.files[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h.Set("Content-Type", f.contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.etag)
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
}
