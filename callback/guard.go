package callback

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// Errors returned by [Guard] and by clients it builds.
var (
	// ErrRefusedURL means a callback URL is malformed or names a forbidden
	// address. The wrapping error's text says why and is fit to show the
	// caller who supplied the URL.
	ErrRefusedURL = errors.New("callback: refused callback URL")
	// ErrRefusedAddress means a connection was refused because the address
	// it would reach is forbidden.
	ErrRefusedAddress = errors.New("callback: refused address")
)

const (
	// maxURLBytes is the longest callback URL accepted.
	maxURLBytes = 2048
	// defaultClientTimeout is the overall timeout of a [Guard.Client]
	// given none.
	defaultClientTimeout = 30 * time.Second
)

// refusedPrefixes are the forbidden ranges that net/netip has no method for.
// With the ranges netip names, they are every block IANA's IPv4 and IPv6
// Special-Purpose Address Registries mark not globally reachable.
var refusedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network" (RFC 1122); Linux dials it as loopback
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT (RFC 6598)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments (RFC 6890)
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation, TEST-NET-1 (RFC 5737)
	netip.MustParsePrefix("192.88.99.0/24"),  // 6to4 relay anycast, deprecated (RFC 7526)
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking (RFC 2544)
	netip.MustParsePrefix("198.51.100.0/24"), // documentation, TEST-NET-2 (RFC 5737)
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation, TEST-NET-3 (RFC 5737)
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved (RFC 1112), and limited broadcast
	netip.MustParsePrefix("::/96"),           // IPv4-compatible IPv6, deprecated (RFC 4291)
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64 (RFC 8215)
	netip.MustParsePrefix("100::/64"),        // discard-only (RFC 6666)
	netip.MustParsePrefix("2001::/23"),       // IETF protocol assignments, Teredo among them (RFC 2928, 4380)
	netip.MustParsePrefix("2001:db8::/32"),   // documentation (RFC 3849)
	netip.MustParsePrefix("2002::/16"),       // 6to4, which carries an IPv4 address (RFC 3056)
	netip.MustParsePrefix("3fff::/20"),       // documentation (RFC 9637)
	netip.MustParsePrefix("5f00::/16"),       // segment routing SIDs (RFC 9602)
	netip.MustParsePrefix("fec0::/10"),       // site-local, deprecated (RFC 3879)
}

// nat64Prefix is the well-known NAT64 prefix (RFC 6052). An address in it
// reaches the IPv4 address in its last four bytes, so that one is checked.
var nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")

// Guard decides which addresses a callback may reach.
//
// It refuses loopback, private, link-local, unspecified, multicast and
// carrier-grade NAT addresses, the IPv4-mapped forms of all these, and
// 0.0.0.0/8, unless an address lies inside one of the CIDRs given to
// [NewGuard]. The zero value, like a nil *Guard, refuses them all and allows
// nothing extra. A Guard is immutable and safe for concurrent use.
type Guard struct {
	allow []netip.Prefix
}

// NewGuard takes CIDRs that are allowed even though they are otherwise
// refused (e.g. "10.1.0.0/16", "127.0.0.0/8"); an invalid CIDR is an error.
func NewGuard(allow []string) (*Guard, error) {
	g := &Guard{allow: make([]netip.Prefix, 0, len(allow))}
	for _, s := range allow {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("callback: invalid allowed CIDR %q: %w", s, err)
		}
		g.allow = append(g.allow, p.Masked())
	}
	return g, nil
}

// CheckURL validates a callback URL at submit time: it must be absolute,
// with scheme http or https, a host and no userinfo, and be at most 2048
// bytes; and if the host is a literal IP, that IP must be permitted (see
// [Guard.Permitted]). Hostnames are checked at connect time only, by
// [Guard.Client]. Errors wrap [ErrRefusedURL] with a reason fit to show the
// caller; they do not repeat the URL.
func (g *Guard) CheckURL(raw string) error {
	u, err := parseCallbackURL(raw)
	if err != nil {
		return err
	}
	host := u.Hostname()
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil // a hostname: checked when dialed
	}
	if !g.Permitted(ip) {
		return fmt.Errorf("%w: host %s is not a permitted address (loopback, private, link-local and similar addresses are refused)", ErrRefusedURL, host)
	}
	return nil
}

// parseCallbackURL parses raw and checks its shape, not its address.
// Errors wrap [ErrRefusedURL].
func parseCallbackURL(raw string) (*url.URL, error) {
	if len(raw) > maxURLBytes {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrRefusedURL, maxURLBytes)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: not a valid URL", ErrRefusedURL)
	}
	if reason := shapeProblem(u); reason != "" {
		return nil, fmt.Errorf("%w: %s", ErrRefusedURL, reason)
	}
	return u, nil
}

// shapeProblem says what is wrong with u's form, or "" if nothing is.
func shapeProblem(u *url.URL) string {
	switch {
	case !u.IsAbs():
		return "must be an absolute URL"
	case u.Scheme != "http" && u.Scheme != "https":
		return "scheme must be http or https"
	case u.Opaque != "":
		return "must be of the form scheme://host/path"
	case u.User != nil:
		return "must not contain a user name or password"
	case u.Hostname() == "":
		return "must have a host"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "port must be between 1 and 65535"
		}
	}
	return ""
}

// Permitted reports whether ip may be reached. Refused are loopback,
// private (RFC 1918, fc00::/7), link-local (169.254.0.0/16, fe80::/10,
// which covers the cloud metadata address 169.254.169.254), unspecified,
// multicast, carrier-grade NAT (100.64.0.0/10), limited broadcast,
// 0.0.0.0/8, every other block IANA's special-purpose registries mark not
// globally reachable (documentation, benchmarking, reserved, 6to4, Teredo,
// site-local, …), the IPv4-mapped, IPv4-compatible and NAT64
// (64:ff9b::/96) forms of all these, and the invalid zero Addr, unless ip
// is inside an allowed CIDR. An IPv6 zone is ignored.
func (g *Guard) Permitted(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.WithZone("")
	return g.allowed(ip) || !refused(ip)
}

// allowed reports whether ip, or its unmapped IPv4 form, is inside an
// allowed CIDR.
func (g *Guard) allowed(ip netip.Addr) bool {
	if g == nil {
		return false
	}
	unmapped := ip.Unmap()
	for _, p := range g.allow {
		if p.Contains(ip) || p.Contains(unmapped) {
			return true
		}
	}
	return false
}

// refused reports whether ip, which has no zone, is in a forbidden range.
func refused(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsUnspecified() || ip.IsMulticast() {
		return true
	}
	for _, p := range refusedPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	if nat64Prefix.Contains(ip) {
		b := ip.As16()
		return refused(netip.AddrFrom4([4]byte(b[12:])))
	}
	return false
}

// Client returns an *http.Client for delivering callbacks. It checks every
// address at connect time, in the dialer's ControlContext hook, which sees
// the IP actually being dialed, so neither a hostname resolving to a
// forbidden address nor DNS rebinding gets past it; a refused connection
// fails with an error wrapping [ErrRefusedAddress]. It never follows
// redirects: a 3xx is returned as the answer. It uses no proxy, whatever
// the environment says. Its overall timeout per request is timeout; zero
// or less means 30 seconds.
//
// Each call builds a new connection pool; build one client and share it.
func (g *Guard) Client(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = defaultClientTimeout
	}
	dialer := &net.Dialer{
		Timeout:        timeout,
		KeepAlive:      30 * time.Second,
		ControlContext: g.controlDial,
	}
	transport := &http.Transport{
		Proxy:                 nil, // a proxy would dial on our behalf, unchecked
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport:     transport,
		CheckRedirect: noRedirects,
		Timeout:       timeout,
	}
}

// controlDial runs after the socket is created and before it connects,
// with the resolved address being dialed.
func (g *Guard) controlDial(_ context.Context, network, address string, _ syscall.RawConn) error {
	if network != "tcp4" && network != "tcp6" {
		return fmt.Errorf("%w: network %s is not allowed", ErrRefusedAddress, network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse dialed address %q", ErrRefusedAddress, address)
	}
	if !g.Permitted(ap.Addr()) {
		return fmt.Errorf("%w: %s is not a permitted address", ErrRefusedAddress, ap.Addr())
	}
	return nil
}

// noRedirects makes the client return a redirect as the response.
func noRedirects(*http.Request, []*http.Request) error {
	return http.ErrUseLastResponse
}
