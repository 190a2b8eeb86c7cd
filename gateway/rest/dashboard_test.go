package rest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func serveDashboard(t *testing.T, d *Dashboard, method, path string, header ...string) (*http.Response, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	d.ServeHTTP(w, req)
	resp := w.Result()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestDashboardServesEmbeddedFiles(t *testing.T) {
	d := NewDashboard()
	for _, tc := range []struct {
		path, contentType, contains string
	}{
		{"/", "text/html; charset=utf-8", `<script src="/dashboard/dashboard.js" defer></script>`},
		{"/dashboard/dashboard.js", "text/javascript; charset=utf-8", "/v1/functions"},
		{"/dashboard/dashboard.css", "text/css; charset=utf-8", ".fn"},
		{"/dashboard/icon.svg", "image/svg+xml", "<svg"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := serveDashboard(t, d, http.MethodGet, tc.path)
			h := resp.Header
			if resp.StatusCode != http.StatusOK || h.Get("Content-Type") != tc.contentType || !strings.Contains(body, tc.contains) {
				t.Fatalf("GET %s = %d %s, %d bytes; want 200 %s containing %q",
					tc.path, resp.StatusCode, h.Get("Content-Type"), len(body), tc.contentType, tc.contains)
			}
			for name, want := range map[string]string{
				"Content-Security-Policy": dashboardCSP,
				"X-Content-Type-Options":  "nosniff",
				"Cache-Control":           "no-cache",
			} {
				if got := h.Get(name); got != want {
					t.Errorf("%s: %q, want %q", name, got, want)
				}
			}
			etag := h.Get("ETag")
			if !regexp.MustCompile(`^"[A-Za-z0-9_-]{16,}"$`).MatchString(etag) {
				t.Fatalf("ETag %q, want a strong tag of the content", etag)
			}
			if again, body := serveDashboard(t, d, http.MethodGet, tc.path, "If-None-Match", etag); again.StatusCode != http.StatusNotModified || body != "" {
				t.Errorf("GET with If-None-Match: its ETag = %d with %d bytes, want 304 and none", again.StatusCode, len(body))
			}
			if head, body := serveDashboard(t, d, http.MethodHead, tc.path); head.StatusCode != http.StatusOK || body != "" {
				t.Errorf("HEAD = %d with %d bytes, want 200 and none", head.StatusCode, len(body))
			}
		})
	}
	for _, path := range []string{"/dashboard/index.html", "/dashboard/", "/dashboard/nope.js", "/index.html"} {
		if resp, _ := serveDashboard(t, d, http.MethodGet, path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, resp.StatusCode)
		}
	}
	if resp, _ := serveDashboard(t, d, http.MethodPost, "/"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST / = %d, want 405", resp.StatusCode)
	}
}

// TestDashboardKeepsToItsCSP checks the files against what the CSP
// enforces in the browser, where a breach would only show as a broken page:
// no inline script or style, nothing from another origin, and no HTML built
// from strings (Trusted Types).
func TestDashboardKeepsToItsCSP(t *testing.T) {
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "require-trusted-types-for 'script'"} {
		if !strings.Contains(dashboardCSP, want) {
			t.Errorf("CSP %q lacks %q", dashboardCSP, want)
		}
	}
	if strings.Contains(dashboardCSP, "unsafe") {
		t.Errorf("CSP %q allows something unsafe", dashboardCSP)
	}

	page, err := dashboardFiles.ReadFile("dashboard/index.html")
	if err != nil {
		t.Fatal(err)
	}
	html := string(page)
	for _, m := range regexp.MustCompile(`<script[^>]*>`).FindAllString(html, -1) {
		if !strings.Contains(m, `src="/dashboard/`) {
			t.Errorf("inline script %s: the CSP blocks it", m)
		}
	}
	for _, bad := range []string{"<style", " style=", " onclick=", " onload=", " onsubmit=", "javascript:"} {
		if strings.Contains(html, bad) {
			t.Errorf("index.html has %q: the CSP blocks it", bad)
		}
	}
	for _, m := range regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(html, -1) {
		if !strings.HasPrefix(m[1], "/") || strings.HasPrefix(m[1], "//") {
			t.Errorf("index.html refers to %q; everything must come from the gateway itself", m[1])
		}
		if _, ok := NewDashboard().files[m[1]]; !ok {
			t.Errorf("index.html refers to %q, which the dashboard does not serve", m[1])
		}
	}

	script, err := dashboardFiles.ReadFile("dashboard/dashboard.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if strings.Contains(string(script), sink) {
			t.Errorf("dashboard.js uses %s, which Trusted Types forbid", sink)
		}
	}
	for _, u := range regexp.MustCompile(`https?://[^'"\s]*`).FindAllString(string(script), -1) {
		if u != "http://www.w3.org/2000/svg" { // a namespace, never fetched
			t.Errorf("dashboard.js names %s; it may only talk to the gateway that served it", u)
		}
	}
}
