package callback_test

import (
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/callback"
)

// refusedAddrs must never be reachable by default.
var refusedAddrs = []string{
	"127.0.0.1", "127.1.2.3", "169.254.169.254", "::1", "10.0.0.1",
	"192.168.1.1", "172.16.0.1", "172.31.255.255", "100.64.0.1", "100.127.255.254",
	"::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",
	"fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1",
	"0.0.0.0", "0.1.2.3", "::", "224.0.0.1", "239.255.255.250", "ff02::1",
	"255.255.255.255", "::127.0.0.1", "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1",
	"::ffff:100.64.0.1", "::ffff:0.0.0.1", "::ffff:255.255.255.255", "64:ff9b::6440:1",
}

// permittedAddrs are public and must be reachable.
var permittedAddrs = []string{
	"93.184.216.34", "2606:4700::1", "8.8.8.8", "::ffff:93.184.216.34",
	"100.63.255.255", "100.128.0.0", "172.32.0.1", "64:ff9b::808:808",
}

func mustGuard(tb testing.TB, allow ...string) *callback.Guard {
	tb.Helper()
	g, err := callback.NewGuard(allow)
	if err != nil {
		tb.Fatalf("NewGuard(%q): %v", allow, err)
	}
	return g
}

func TestPermitted(t *testing.T) {
	for _, g := range []struct {
		name  string
		guard *callback.Guard
	}{
		{"NewGuard", mustGuard(t)},
		{"zero", &callback.Guard{}},
		{"nil", nil},
	} {
		t.Run(g.name, func(t *testing.T) {
			for _, s := range refusedAddrs {
				if g.guard.Permitted(netip.MustParseAddr(s)) {
					t.Errorf("Permitted(%s) = true, want false", s)
				}
			}
			for _, s := range permittedAddrs {
				if !g.guard.Permitted(netip.MustParseAddr(s)) {
					t.Errorf("Permitted(%s) = false, want true", s)
				}
			}
			if g.guard.Permitted(netip.Addr{}) {
				t.Error("Permitted(zero Addr) = true, want false")
			}
		})
	}
}

func TestAllowedCIDRs(t *testing.T) {
	g := mustGuard(t, "127.0.0.0/8", "10.1.0.0/16", "fd00::1/8")
	for _, s := range []string{"127.0.0.1", "127.9.9.9", "::ffff:127.0.0.1", "10.1.2.3", "fd99::1"} {
		if !g.Permitted(netip.MustParseAddr(s)) {
			t.Errorf("Permitted(%s) = false, want true: inside an allowed CIDR", s)
		}
	}
	for _, s := range []string{"10.2.0.1", "169.254.169.254", "::1", "192.168.1.1", "fc00::1"} {
		if g.Permitted(netip.MustParseAddr(s)) {
			t.Errorf("Permitted(%s) = true, want false: outside the allowed CIDRs", s)
		}
	}
	if err := g.CheckURL("http://127.0.0.1:8080/hook"); err != nil {
		t.Errorf("CheckURL to allowed loopback: %v", err)
	}
}

func TestNewGuardRejectsInvalidCIDR(t *testing.T) {
	for _, s := range []string{"127.0.0.1", "10.0.0.0/33", "not-a-cidr", ""} {
		if _, err := callback.NewGuard([]string{s}); err == nil {
			t.Errorf("NewGuard(%q) = nil error, want one", s)
		} else if !strings.HasPrefix(err.Error(), "callback: ") {
			t.Errorf("NewGuard(%q) error %q lacks package prefix", s, err)
		}
	}
}

func TestCheckURL(t *testing.T) {
	g := mustGuard(t)
	refused := []struct{ name, url, reason string }{
		{"loopback", "http://127.0.0.1/hook", "not a permitted address"},
		{"loopback with port", "https://127.0.0.1:8443/hook", "not a permitted address"},
		{"metadata", "http://169.254.169.254/latest/meta-data/", "not a permitted address"},
		{"IPv6 loopback", "http://[::1]/", "not a permitted address"},
		{"IPv6 loopback with port", "http://[::1]:9000/", "not a permitted address"},
		{"private 10", "http://10.0.0.1/", "not a permitted address"},
		{"private 192.168", "http://192.168.1.1/", "not a permitted address"},
		{"private 172.16", "http://172.16.0.1/", "not a permitted address"},
		{"CGNAT", "http://100.64.0.1/", "not a permitted address"},
		{"mapped loopback", "http://[::ffff:127.0.0.1]/", "not a permitted address"},
		{"link-local v6", "http://[fe80::1]/", "not a permitted address"},
		{"link-local v6 with zone", "http://[fe80::1%25eth0]/", "not a permitted address"},
		{"unspecified", "http://0.0.0.0:8080/", "not a permitted address"},
		{"ftp", "ftp://example.com/x", "scheme must be http or https"},
		{"file", "file:///etc/passwd", "scheme must be http or https"},
		{"gopher", "gopher://example.com/", "scheme must be http or https"},
		{"relative", "/hook", "absolute"},
		{"scheme-relative", "//example.com/hook", "absolute"},
		{"opaque", "http:example.com", "scheme://host"},
		{"no host", "http:///hook", "must have a host"},
		{"userinfo", "https://user:pass@example.com/", "user name or password"},
		{"user only", "https://user@example.com/", "user name or password"},
		{"port zero", "http://example.com:0/", "port"},
		{"port too big", "http://example.com:65536/", "port"},
		{"unparsable", "http://exa mple.com/", "not a valid URL"},
		{"too long", "https://example.com/" + strings.Repeat("a", 2049-len("https://example.com/")), "longer than 2048"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			err := g.CheckURL(tt.url)
			if !errors.Is(err, callback.ErrRefusedURL) {
				t.Fatalf("CheckURL(%q) = %v, want ErrRefusedURL", tt.url, err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("CheckURL(%q) = %q, want reason %q", tt.url, err, tt.reason)
			}
		})
	}

	accepted := []string{
		"https://example.com/hooks/sluice?token=abc",
		"HTTP://example.com/upper-scheme",
		"http://93.184.216.34/",
		"https://[2606:4700::1]:8443/hook",
		"https://example.com:443/",
		"http://localhost:8080/", // hostnames are checked when dialed
		"https://example.com/" + strings.Repeat("a", 2048-len("https://example.com/")),
	}
	for _, u := range accepted {
		if err := g.CheckURL(u); err != nil {
			t.Errorf("CheckURL(%q) = %v, want nil", u, err)
		}
	}
}

func TestClientUsesNoProxy(t *testing.T) {
	c := mustGuard(t).Client(0)
	tr, ok := c.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("Transport is %T, want *http.Transport", c.Transport)
	}
	if tr.Proxy != nil {
		t.Error("Transport.Proxy is set; a proxy would dial unchecked addresses")
	}
	if c.Timeout <= 0 {
		t.Errorf("Timeout = %v, want a default", c.Timeout)
	}
	if c.CheckRedirect == nil {
		t.Error("CheckRedirect is nil: redirects would be followed")
	}
}

// ianaNotGloballyReachable are the blocks of IANA's IPv4 and IPv6
// Special-Purpose Address Registries whose "Globally Reachable" is False
// (or N/A), as the registries stood in 2025, with the well-known
// documentation prefix 3fff::/20 (RFC 9637). A webhook has no business with
// any of them. (A few narrower entries inside 192.0.0.0/24 and 2001::/23
// are globally reachable; refusing the whole block costs webhooks nothing.)
var ianaNotGloballyReachable = []string{
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
	"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
	"198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32",
	"::1/128", "::/128", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001::/32",
	"2001:2::/48", "2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10",
}

func TestPermittedRefusesSpecialPurposeBlocks(t *testing.T) {
	g := mustGuard(t)
	for _, s := range ianaNotGloballyReachable {
		p := netip.MustParsePrefix(s)
		first := p.Addr()
		// The last address of the block too.
		b := first.AsSlice()
		for i := p.Bits(); i < len(b)*8; i++ {
			b[i/8] |= 1 << (7 - i%8)
		}
		last, _ := netip.AddrFromSlice(b)
		for _, ip := range []netip.Addr{first, last} {
			if g.Permitted(ip) {
				t.Errorf("Permitted(%s) = true; it is in %s, which IANA marks not globally reachable", ip, s)
			}
		}
	}
	// Just outside some of them stays open.
	for _, s := range []string{"192.0.3.1", "198.20.0.1", "223.255.255.254", "2001:200::1", "2003::1"} {
		if !g.Permitted(netip.MustParseAddr(s)) {
			t.Errorf("Permitted(%s) = false, want true: it is globally reachable", s)
		}
	}
}
