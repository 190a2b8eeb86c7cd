package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/embedded"
	"github.com/sluicehq/sluice/buffer/provision"
	"github.com/sluicehq/sluice/callback"
	"github.com/sluicehq/sluice/callback/delivery"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/target"
	"github.com/sluicehq/sluice/gateway"
	"github.com/sluicehq/sluice/gateway/rest"
)

// Gateway is one running Sluice gateway: ingress servers, the
// dispatcher, and the JetStream connection (and embedded server) they share.
type Gateway struct {
	// HTTPAddr and GRPCAddr are where the servers listen.
	HTTPAddr, GRPCAddr net.Addr

	log      *slog.Logger
	opts     Options
	tls      *tls.Config      // both listeners'; nil: plaintext
	embedded *embedded.Server // nil with an external NATS
	nc       *nats.Conn
	httpLn   net.Listener
	grpcLn   net.Listener
	httpSrv  *http.Server
	grpcSrv  *grpc.Server // the public gRPC server, on grpcLn
	health   interface {
		SetServingStatus(string, healthpb.HealthCheckResponse_ServingStatus)
	}
	// REST calls the gRPC services through restConn, a client of restSrv:
	// the same services with the same server options as grpcSrv, served
	// in memory on restLn, so whatever gRPC enforces applies to REST too
	// while grpcSrv's transport security (TLS, client certificates) does
	// not stand in REST's way.
	restLn     *bufconn.Listener
	restSrv    *grpc.Server
	restConn   *grpc.ClientConn
	dispatcher *dispatch.Dispatcher
	callbacks  *delivery.Deliverer // nil without callback secrets
	svc        *gateway.Service
	queue      *buffer.Queue
	tel        *telemetry
	ready      atomic.Bool // /readyz: serving, not shutting down
}

// fitSizes checks that each function's payloads and results fit what the
// queue stores them in on this NATS server (natsMax is its max_payload),
// and gives a function without max_payload or max_result the default, or
// what fits if that is less, saying so in log.
func fitSizes(functions []config.FunctionConfig, queue *buffer.Queue, natsMax int64, log *slog.Logger) error {
	maxPayload, maxResult := queue.MaxPayloadBytes(), queue.MaxResultBytes()
	for i := range functions {
		f := &functions[i]
		payload := int64(f.MaxPayload)
		if payload == 0 {
			payload = gateway.DefaultMaxPayload
		}
		if payload > maxPayload && !f.MaxPayloadGiven() {
			// A stock server's max_payload (1MB) leaves less than the
			// default for a payload, with the job and a response beside it.
			log.Info("max_payload not set: taking the most this NATS server's max_payload leaves room for",
				"function", f.Name, "max_payload", maxPayload, "default", payload, "nats_max_payload", natsMax)
			f.MaxPayload = config.ByteSize(maxPayload)
		} else if payload > maxPayload {
			return fmt.Errorf("functions (%s).max_payload: %d bytes does not fit the NATS server's max_payload of %d: a job's dead letter holds its payload, the job and up to 64KiB of the function's response, %d bytes besides the payload; at most %d",
				f.Name, f.MaxPayload, natsMax, buffer.PayloadOverhead, maxPayload)
		}
		switch {
		case f.MaxResult == 0:
			f.MaxResult = config.ByteSize(min(target.DefaultMaxResponseBytes, maxResult))
		case int64(f.MaxResult) > maxResult:
			return fmt.Errorf("functions (%s).max_result: %d bytes does not fit the NATS server's max_payload of %d: a job's state holds its result and the job; at most %d",
				f.Name, f.MaxResult, natsMax, maxResult)
		}
	}
	return nil
}

// New sets everything up and starts listening; Run serves.
// The steps run in the order their parts depend on one another: NATS, the
// buffer on it, callbacks and functions over the buffer, the service and
// dispatcher over those, and last the listeners and servers in front.
func New(ctx context.Context, cfg *config.Config, opts Options, log *slog.Logger) (_ *Gateway, err error) {
	p := &Gateway{log: log, opts: opts}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if p.tls, err = serverTLSConfig(opts.TLSCert, opts.TLSKey, opts.TLSClientCA, log); err != nil {
		return nil, err
	}
	if err := p.connectNATS(cfg); err != nil {
		return nil, err
	}
	if p.tel, err = newTelemetry(ctx, opts.TracerProvider); err != nil {
		return nil, err
	}
	if err := p.openQueue(ctx, cfg); err != nil {
		return nil, err
	}
	policy, err := p.newCallbacks(cfg)
	if err != nil {
		return nil, err
	}
	gwFuncs, dispFuncs, err := p.setUpFunctions(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := p.newService(cfg, policy, gwFuncs); err != nil {
		return nil, err
	}
	p.dispatcher, err = dispatch.New(dispatch.Config{
		Source: p.queue, Functions: dispFuncs, Pools: config.DispatchPools(cfg.Pools), TenantWeights: config.TenantWeights(cfg.Tenants),
		Logger: log, DrainTimeout: opts.DrainTimeout,
		TracerProvider: p.tel.tracer, MeterProvider: p.tel.meter,
	})
	if err != nil {
		return nil, err
	}
	if err := p.listen(); err != nil {
		return nil, err
	}
	if err := p.newGRPCServers(); err != nil {
		return nil, err
	}
	if err := p.newHTTPServer(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// connectNATS connects to the NATS at --nats-url, or, without one, starts
// an embedded JetStream in the data directory and connects to that.
func (p *Gateway) connectNATS(cfg *config.Config) error {
	var err error
	if p.opts.NATSURL == "" {
		p.embedded, err = embedded.Start(embedded.Config{
			StoreDir:     p.opts.DataDir,
			NoSyncAlways: cfg.Buffer.Durability == "interval",
		})
		if err != nil {
			return err
		}
		p.nc, err = p.embedded.Connect()
	} else {
		// A connection cut silently (no RST) is noticed by missed pings:
		// with the client's defaults (every 2 minutes, 2 missed) a gateway
		// could wait four minutes before moving to another server.
		var auth []nats.Option
		if auth, err = p.opts.NATSAuth.options(); err != nil {
			return err
		}
		p.nc, err = nats.Connect(p.opts.NATSURL, append(auth, nats.Name("sluice"), nats.MaxReconnects(-1),
			nats.PingInterval(natsPingInterval), nats.MaxPingsOutstanding(natsMaxPingsOut))...)
	}
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	return nil
}

// jetStreamStartPatience is how long start-up waits for a JetStream whose
// API does not answer in time: a cluster that has just formed or restarted
// is still electing the leaders of its streams, and several gateways
// creating replicated streams at once on a busy machine can outlast one
// request's timeout (5s). Past it, start-up fails, as before.
const jetStreamStartPatience = time.Minute

// openBuffer opens the buffer, trying again while JetStream is out of
// reach, times out or has no peers to place a stream on, for up to
// jetStreamStartPatience: opening only creates or updates streams and
// buckets, so a try that timed out after it took effect is harmless. Any
// other error ends start-up at once.
func (p *Gateway) openBuffer(ctx context.Context, cfg buffer.Config) (*buffer.Queue, error) {
	giveUp := time.Now().Add(jetStreamStartPatience)
	for wait := time.Second; ; wait = min(2*wait, 10*time.Second) {
		queue, err := buffer.Open(ctx, p.nc, cfg)
		if err == nil || ctx.Err() != nil || !passingAtStart(err) || time.Now().Add(wait).After(giveUp) {
			return queue, err
		}
		p.log.Warn("JetStream could not open the buffer yet; trying again", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// passingAtStart says whether err, opening the buffer, is one a while may
// mend: JetStream did not answer in time or is out of reach, or it has no
// peers to place a replicated stream on (10005: a node is down, or a
// cluster still forming).
func passingAtStart(err error) bool {
	var apiErr *jetstream.APIError
	return buffer.Unavailable(err) || errors.As(err, &apiErr) && apiErr.ErrorCode == jsNoSuitablePeers
}

// jsNoSuitablePeers is JetStream's error code for "no suitable peers for
// placement".
const jsNoSuitablePeers = 10005

// openQueue opens the job buffer on the NATS connection, warning first of
// settings that risk losing jobs, and registers the buffer's metrics.
func (p *Gateway) openQueue(ctx context.Context, cfg *config.Config) error {
	if cfg.Buffer.Durability == "interval" {
		p.log.Warn("buffer.durability is interval: an OS crash or power loss can lose accepted jobs")
	}
	replicas := max(p.opts.Replicas, 1)
	if replicas == 1 && p.opts.NATSURL != "" && p.nc.ConnectedClusterName() != "" {
		p.log.Warn("NATS is a cluster but --replicas is 1: every job is kept on one node's disk, and losing that node loses them; run with --replicas=3",
			"nats_cluster", p.nc.ConnectedClusterName(), "nats_server", p.nc.ConnectedServerName())
	}
	bufCfg := cfg.Buffer.Queue()
	bufCfg.Logger, bufCfg.Replicas = p.log, replicas
	bufCfg.KeyConcurrency = cfg.KeyConcurrency()
	bufCfg.JetStreamDomain = p.opts.NATSAuth.JSDomain
	queue, err := p.openBuffer(ctx, bufCfg)
	if errors.Is(err, provision.ErrDurability) {
		return fmt.Errorf("--replicas=%d: %w", replicas, err)
	}
	if err != nil {
		return err
	}
	p.queue = queue
	if err := registerBatchMetrics(p.tel.meter, queue); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if err := registerStoreMetrics(p.tel.meter, queue); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// newCallbacks sets up callback delivery when callback secrets are
// configured, and returns the policy the gateway checks callback URLs
// with; without secrets there are no callbacks, and the policy is nil.
func (p *Gateway) newCallbacks(cfg *config.Config) (gateway.CallbackPolicy, error) {
	cb := cfg.Callbacks
	if len(cb.Secrets) == 0 {
		return nil, nil
	}
	guard, keys, err := config.CallbackParts(cfg)
	if err != nil {
		return nil, err
	}
	cbCfg := cb.Deliverer()
	cbCfg.Source, cbCfg.Logger = p.queue, p.log
	cbCfg.Sender = &callback.Sender{Client: guard.Client(time.Duration(cb.Timeout)), Keys: keys}
	p.callbacks, err = delivery.New(cbCfg)
	if err != nil {
		return nil, err
	}
	return guard, nil
}

// setUpFunctions checks the functions' sizes against the buffer, sets up
// their targets, and returns each function as the gateway and as dispatch
// take it.
func (p *Gateway) setUpFunctions(ctx context.Context, cfg *config.Config) ([]gateway.Function, []dispatch.Function, error) {
	// The targets may settle a function's concurrency (a Lambda function's
	// reserved concurrency): from here on, functions is the configuration.
	functions := slices.Clone(cfg.Functions)
	if err := fitSizes(functions, p.queue, p.nc.MaxPayload(), p.log); err != nil {
		return nil, nil, err
	}
	invokers, err := setUpTargets(ctx, functions, p.nc, p.opts.NATSURL != "", p.log)
	if err != nil {
		return nil, nil, err
	}
	var gwFuncs []gateway.Function
	var dispFuncs []dispatch.Function
	for i, f := range functions {
		df := config.DispatchFunction(f)
		if f.Fairness {
			df.Lanes = config.FairLanes(f, cfg.Tenants)
		}
		df.Invoker = invokers[i]
		gwFuncs = append(gwFuncs, config.GatewayFunction(f, df, cfg.Pools))
		dispFuncs = append(dispFuncs, df)
	}
	return gwFuncs, dispFuncs, nil
}

// newService makes the gateway service over the buffer.
func (p *Gateway) newService(cfg *config.Config, policy gateway.CallbackPolicy, functions []gateway.Function) error {
	tenants, err := config.GatewayTenants(cfg.Tenants)
	if err != nil {
		return err
	}
	if len(tenants) == 0 {
		p.log.Warn("no tenants configured: the API is open, no API key is asked for, and every caller can read every job")
	}
	queue := p.queue
	p.svc, err = gateway.NewService(gateway.Config{
		Jobs: queue, Dispatch: queue, Watcher: queue, DeadLetters: queue, Callbacks: policy,
		Functions: functions, Tenants: tenants, Logger: p.log,
		TracerProvider: p.tel.tracer, MeterProvider: p.tel.meter,
		Streams: cfg.Streams.Gateway(),
	})
	return err
}

// listen binds the gRPC and HTTP listeners; HTTPAddr and GRPCAddr are
// where they ended up (a port of 0 picks one).
func (p *Gateway) listen() error {
	var err error
	if p.grpcLn, err = net.Listen("tcp", p.opts.GRPCAddr); err != nil {
		return fmt.Errorf("--grpc-addr: %w", err)
	}
	if p.httpLn, err = net.Listen("tcp", p.opts.HTTPAddr); err != nil {
		return fmt.Errorf("--http-addr: %w", err)
	}
	p.GRPCAddr, p.HTTPAddr = p.grpcLn.Addr(), p.httpLn.Addr()
	return nil
}

// otelGRPCOptions instrument both gRPC servers and REST's client of one.
func (p *Gateway) otelGRPCOptions() []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(p.tel.tracer), otelgrpc.WithMeterProvider(p.tel.meter),
		otelgrpc.WithPropagators(propagation.TraceContext{}),
	}
}

// newGRPCServers makes the public gRPC server and the in-memory one REST
// calls through, and connects REST's client to the latter.
func (p *Gateway) newGRPCServers() error {
	// Both gRPC servers take the same configuration and options; only
	// the public one adds transport credentials.
	grpcCfg := gateway.GRPCConfig{}
	otelOpts := p.otelGRPCOptions()
	grpcOpts := []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelOpts...))}
	publicOpts := grpcOpts
	if p.tls != nil {
		publicOpts = append(slices.Clip(grpcOpts), grpc.Creds(credentials.NewTLS(p.tls)))
	}
	grpcSrv, hs := gateway.NewGRPCServer(p.svc, grpcCfg, publicOpts...)
	p.grpcSrv, p.health = grpcSrv, hs
	// restSrv's health service is reachable only by REST, which does not
	// expose it; the public one reports draining. Every REST stream (a
	// :watch) crosses the one in-memory connection, whatever HTTP
	// connection it came on: the service's watch limits bound them, not
	// a cap per connection, which would make one tenant's watches block
	// everyone's.
	restCfg := grpcCfg
	restCfg.MaxConcurrentStreams = math.MaxUint32
	p.restSrv, _ = gateway.NewGRPCServer(p.svc, restCfg, grpcOpts...)
	p.restLn = bufconn.Listen(restBufferSize)
	var err error
	p.restConn, err = grpc.NewClient("passthrough:///sluice-rest",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return p.restLn.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelOpts...)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return fmt.Errorf("connect REST to gRPC: %w", err)
	}
	return nil
}

// newHTTPServer makes the HTTP server: metrics, health and readiness
// probes, and REST over the gRPC services.
func (p *Gateway) newHTTPServer(ctx context.Context) error {
	// Unary calls run in process; only streams cross the in-memory
	// connection.
	restHandler, err := rest.NewHandler(ctx, rest.NewInProcessConn(p.svc, p.restConn), p.svc)
	if err != nil {
		return err
	}
	readHeaderTimeout := p.opts.ReadHeaderTimeout
	if readHeaderTimeout == 0 {
		readHeaderTimeout = DefaultReadHeaderTimeout
	}
	top := http.NewServeMux()
	top.Handle("GET /metrics", p.tel.metrics)
	top.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") }) //nolint:errcheck // the prober may have gone
	top.HandleFunc("GET /readyz", p.readyz)
	top.Handle("/", otelhttp.NewHandler(restHandler, "sluice.rest",
		otelhttp.WithTracerProvider(p.tel.tracer), otelhttp.WithMeterProvider(p.tel.meter),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		// server.address and server.port from the listener, not from the
		// client's Host header: a label value per Host sent would be a
		// new series each.
		otelhttp.WithServerName(p.HTTPAddr.String())))
	p.httpSrv = &http.Server{
		Handler:           top,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    gateway.DefaultMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		TLSConfig:         p.tls.Clone(), // its own: Serve adds to NextProtos
	}
	return nil
}

// readyz answers 200 while the gateway takes work: not shutting down,
// JetStream reachable and Sluice's streams in place; 503 with the reason
// otherwise, in general words: whoever can reach the port reads it, and
// the log has the detail.
func (p *Gateway) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var reason string
	switch {
	case !p.ready.Load():
		reason = "not serving: starting or shutting down"
	case !p.nc.IsConnected():
		reason = "not connected to NATS"
	default:
		if err := p.queue.Ready(ctx); err != nil {
			p.log.WarnContext(ctx, "not ready", "err", err)
			reason = "the job buffer is not available; the gateway's log has the details"
		}
	}
	if reason != "" {
		http.Error(w, reason, http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ready\n") //nolint:errcheck // the prober may have gone
	// A full store is said, not made a failed probe: the gateway still
	// serves reads, polls and the jobs it holds, and taking every replica
	// out of its load balancer would stop those too.
	for _, full := range p.queue.FullStores(ctx) {
		io.WriteString(w, full+"\n") //nolint:errcheck // the prober may have gone
	}
}

// How often the gateway pings NATS, and how many unanswered pings make it
// reconnect: a silent cut is noticed within about half a minute.
const (
	natsPingInterval = 10 * time.Second
	natsMaxPingsOut  = 3
)

// restBufferSize is the buffer, in each direction, of the in-memory
// connection from REST to its gRPC server.
const restBufferSize = 1 << 20

// DialTarget turns a listener's address into one a client can dial: a
// wildcard host becomes loopback.
func DialTarget(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return a.String()
	}
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(tcp.Port))
}

// Run serves until ctx ends, then stops taking requests, lets the
// dispatcher finish or hand back in-flight work, and closes the buffer.
func (p *Gateway) Run(ctx context.Context) error {
	defer p.close()
	p.log.Info("sluice gateway serving", "http", p.HTTPAddr.String(), "grpc", p.GRPCAddr.String(), "tls", p.TLSMode())
	g, gctx := errgroup.WithContext(ctx)
	if err := p.svc.Watch(gctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it began to serve
		}
		return err
	}
	g.Go(func() error {
		if err := p.grpcSrv.Serve(p.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := p.restSrv.Serve(p.restLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc server for REST: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		serve := p.httpSrv.Serve
		if p.tls != nil {
			// The certificate is in TLSConfig; ServeTLS adds HTTP/2.
			serve = func(ln net.Listener) error { return p.httpSrv.ServeTLS(ln, "", "") }
		}
		if err := serve(p.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	g.Go(func() error { return p.dispatcher.Run(gctx) })
	g.Go(func() error { return p.queue.RunParked(gctx, p.log) })
	// Always, not only with keyed functions: jobs stored while a
	// function had key_concurrency are released after it no longer has.
	g.Go(func() error { return p.queue.RunKeyed(gctx, p.log) })
	if p.opts.DebugAddr != "" {
		g.Go(func() error { return ServeDebug(gctx, p.opts.DebugAddr, p.log) })
	}
	if p.callbacks != nil {
		g.Go(func() error { return p.callbacks.Run(gctx) })
	}
	p.ready.Store(true)
	g.Go(func() error {
		<-gctx.Done()
		// Not ready first, so that load balancers stop sending; then the
		// delay they need to notice; then no new requests.
		p.ready.Store(false)
		p.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		if d := p.opts.ShutdownDelay; d > 0 {
			p.log.Info("shutting down: not ready; still serving for the shutdown delay", "shutdown_delay", d)
			time.Sleep(d)
		}
		p.log.Info("shutting down: no new requests; in-flight invocations may finish", "drain_timeout", p.opts.DrainTimeout)
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.httpSrv.Shutdown(shutdownCtx); err != nil {
			p.httpSrv.Close()
		}
		stopGRPC(shutdownCtx, p.grpcSrv, p.restSrv)
		return nil
	})
	err := g.Wait()
	p.log.Info("sluice gateway stopped")
	return err
}

// tlsMode describes the listeners' transport security: "off", "on", or
// "mutual" when clients must present certificates.
func (p *Gateway) TLSMode() string {
	switch c := p.tls; {
	case c == nil:
		return "off"
	case c.ClientAuth == tls.RequireAndVerifyClientCert:
		return "mutual"
	}
	return "on"
}

// restScheme is the scheme of REST URLs: http or https.
func (p *Gateway) RESTScheme() string {
	if p.tls != nil {
		return "https"
	}
	return "http"
}

// stopGRPC stops the servers gracefully, all at once, and stops them hard
// if ctx ends first. It returns when every server has stopped.
func stopGRPC(ctx context.Context, servers ...*grpc.Server) {
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Go(func() {
			stopped := make(chan struct{})
			go func() { srv.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-ctx.Done():
				srv.Stop()
				<-stopped
			}
		})
	}
	wg.Wait()
}

// close releases whatever New set up, in reverse order.
func (p *Gateway) close() {
	if p.tel != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p.tel.shutdown(ctx) //nolint:errcheck // best effort: flush spans not yet exported
		cancel()
	}
	if p.restConn != nil {
		p.restConn.Close()
	}
	// A gRPC server starts its stream workers when it is made: one made by
	// a start that failed later, or never served, must be stopped too.
	// (After Run's graceful stop this does nothing.)
	for _, srv := range []*grpc.Server{p.grpcSrv, p.restSrv} {
		if srv != nil {
			srv.Stop()
		}
	}
	for _, ln := range []net.Listener{p.httpLn, p.grpcLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if p.restLn != nil {
		p.restLn.Close()
	}
	if p.nc != nil && !p.nc.IsClosed() {
		// Drain flushes pending acknowledgements before closing; it closes
		// the connection itself within the connection's drain timeout.
		closed := make(chan struct{})
		p.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if err := p.nc.Drain(); err != nil {
			p.nc.Close()
		}
		select {
		case <-closed:
		case <-time.After(35 * time.Second):
			p.nc.Close()
		}
	}
	if p.embedded != nil {
		p.embedded.Shutdown()
	}
}

// Serving reports whether Run has begun serving and has not begun to shut
// down: what /readyz answers before it looks at the buffer.
func (p *Gateway) Serving() bool { return p.ready.Load() }

// Queue is the buffer the gateway submits to and dispatches from.
func (p *Gateway) Queue() *buffer.Queue { return p.queue }

// NATS is the gateway's connection to JetStream.
func (p *Gateway) NATS() *nats.Conn { return p.nc }
