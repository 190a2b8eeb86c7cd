package rest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/api"
	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/gateway"
)

// NewHandler serves the REST API by calling the gRPC services over conn
// (an [InProcessConn], or any connection to a server of svc), plus its
// OpenAPI 3 document at GET /openapi.json (and the Swagger 2.0 one
// generated from the protos at GET /openapi-v2.json) and the [Dashboard]
// at GET /. svc, the services conn reaches, gives each function's payload
// limit and names the HTTP connection of each stream (see
// [gateway.Service.RESTConnectionMetadata]).
func NewHandler(ctx context.Context, conn grpc.ClientConnInterface, svc *gateway.Service) (http.Handler, error) {
	marshaler := newPayloadMarshaler()
	gw := runtime.NewServeMux(
		// Raw payloads under any content type, JSON included: the submit
		// route's body is the payload, never a JSON envelope.
		runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler),
		runtime.WithMarshalerOption("application/json", marshaler),
		runtime.WithForwardResponseOption(forwardResponse),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithStreamErrorHandler(streamErrorHandler),
		runtime.WithRoutingErrorHandler(routingErrorHandler),
		runtime.WithIncomingHeaderMatcher(incomingHeader),
		// A stream reaches the services over one in-memory connection
		// whatever HTTP connection it came on: it says which, for the
		// limits per connection.
		runtime.WithMetadata(func(_ context.Context, r *http.Request) metadata.MD {
			if !strings.HasSuffix(r.URL.Path, ":watch") {
				return nil
			}
			return svc.RESTConnectionMetadata(r.RemoteAddr)
		}),
		// gRPC metadata is the gateway's business, not the REST caller's.
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithOutgoingTrailerMatcher(func(string) (string, bool) { return "", false }),
	)
	if err := sluicev1.RegisterJobServiceHandlerClient(ctx, gw, sluicev1.NewJobServiceClient(conn)); err != nil {
		return nil, fmt.Errorf("rest: register job service: %w", err)
	}
	if err := sluicev1.RegisterFunctionServiceHandlerClient(ctx, gw, sluicev1.NewFunctionServiceClient(conn)); err != nil {
		return nil, fmt.Errorf("rest: register function service: %w", err)
	}
	if err := sluicev1.RegisterDeadLetterServiceHandlerClient(ctx, gw, sluicev1.NewDeadLetterServiceClient(conn)); err != nil {
		return nil, fmt.Errorf("rest: register dead-letter service: %w", err)
	}
	openAPI, err := api.OpenAPI()
	if err != nil {
		return nil, fmt.Errorf("rest: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /openapi.json", serveJSON(openAPI))
	mux.Handle("GET /openapi-v2.json", serveJSON(api.OpenAPIv2))
	mux.Handle("/v1/", limitBody(svc, requireUTF8(metadataHeaders(withStreamWriter(gw)))))
	dashboard := NewDashboard()
	mux.Handle("GET /{$}", dashboard)
	mux.Handle("GET /dashboard/", dashboard)
	return mux, nil
}

// serveJSON answers with doc, a JSON document.
func serveJSON(doc []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc) //nolint:errcheck // nothing to do if the client left
	})
}

// incomingHeader passes REST headers the services read on as gRPC
// metadata: Idempotency-Key, Sluice-Callback-Url, Sluice-Priority and
// Sluice-Concurrency-Key, besides grpc-gateway's defaults.
func incomingHeader(key string) (string, bool) {
	switch http.CanonicalHeaderKey(key) {
	case "Idempotency-Key":
		return gateway.MetadataIdempotencyKey, true
	case "Sluice-Callback-Url":
		return gateway.MetadataCallbackURL, true
	case "Sluice-Priority":
		return gateway.MetadataPriority, true
	case "Sluice-Concurrency-Key":
		return gateway.MetadataConcurrencyKey, true
	}
	return runtime.DefaultHeaderMatcher(key)
}

// requireUTF8 refuses with 400 a request whose path, query string or
// Content-Type is not valid UTF-8 once unescaped. They become protobuf
// strings on the way to the gRPC services, which cannot carry anything
// else: the call would fail to marshal, an internal error.
func requireUTF8(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var what string
		// An unescapable query string gets grpc-gateway's own 400.
		switch q, err := url.QueryUnescape(r.URL.RawQuery); {
		case !utf8.ValidString(r.URL.Path):
			what = "the path"
		case err == nil && !utf8.ValidString(q):
			what = "the query string"
		case !utf8.ValidString(r.Header.Get("Content-Type")):
			what = "Content-Type"
		default:
			next.ServeHTTP(w, r)
			return
		}
		writeError(w, http.StatusBadRequest, codes.InvalidArgument, what+" is not valid UTF-8")
	})
}

// metadataHeaders refuses with 400 a request whose Idempotency-Key,
// Sluice-Callback-Url, Sluice-Priority or Sluice-Concurrency-Key is not
// printable ASCII. Those headers reach the services as gRPC metadata,
// which cannot carry anything else, and
// grpc-gateway would drop them without a word: a submit would run without
// the idempotency or the callback it asked for.
func metadataHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, name := range []string{"Idempotency-Key", "Sluice-Callback-Url", "Sluice-Priority", "Sluice-Concurrency-Key"} {
			for _, v := range r.Header.Values(name) {
				if strings.IndexFunc(v, func(c rune) bool { return c < ' ' || c > '~' }) >= 0 {
					writeError(w, http.StatusBadRequest, codes.InvalidArgument,
						name+" must be printable ASCII (a URL in its percent-encoded, punycode form)")
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// limitBody caps each request body at the payload limit of the function it
// names, refusing with 413 before reading when Content-Length is already
// over it.
func limitBody(svc *gateway.Service, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := svc.MaxPayload(functionInPath(r.URL.Path))
		if r.ContentLength > limit {
			writeTooLarge(w, r.ContentLength, limit)
			return
		}
		r.Body = &limitedBody{
			ReadCloser:  http.MaxBytesReader(w, r.Body, limit),
			limit:       limit,
			contentType: r.Header.Get("Content-Type"),
		}
		next.ServeHTTP(w, r)
	})
}

// functionInPath returns F from /v1/functions/F/... or /v1/functions/F:verb,
// or "".
func functionInPath(path string) string {
	rest, ok := strings.CutPrefix(path, "/v1/functions/")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	name, _, _ = strings.Cut(name, ":")
	return name
}

func writeTooLarge(w http.ResponseWriter, size, limit int64) {
	writeError(w, http.StatusRequestEntityTooLarge, codes.InvalidArgument, fmt.Sprintf("payload is %d bytes; the limit is %d", size, limit))
}

// writeError answers as grpc-gateway does for an error of code, with
// httpStatus.
func writeError(w http.ResponseWriter, httpStatus int, code codes.Code, message string) {
	b, _ := json.Marshal(struct { //nolint:errchkjson // a string and a number always encode
		Code    codes.Code `json:"code"`
		Message string     `json:"message"`
	}{code, message})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	w.Write(b) //nolint:errcheck // nothing to do if the client left
}

// forwardResponse gives REST answers what the protos cannot say: 202 and
// Location for a submit, and the status, type and polling headers of a
// result or an invocation.
func forwardResponse(_ context.Context, w http.ResponseWriter, m proto.Message) error {
	if m == nil {
		return nil // the start of a stream
	}
	switch m.ProtoReflect().Descriptor().FullName() {
	case "sluice.v1.SubmitJobResponse":
		r := m.(interface {
			GetJob() *sluicev1.Job
			GetReplayed() bool
		})
		if r.GetReplayed() {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		accepted(w, r.GetJob().GetId(), 0)
	case "sluice.v1.GetJobResultResponse":
		r := m.(interface {
			GetJob() *sluicev1.Job
			GetRetryAfterSeconds() int32
		})
		if r.GetJob().GetState() != sluicev1.Job_SUCCEEDED {
			accepted(w, r.GetJob().GetId(), r.GetRetryAfterSeconds())
			return nil
		}
		w.Header().Set("Content-Type", bodyType(r.GetJob().GetResult().GetContentType()))
	case "sluice.v1.InvokeFunctionResponse":
		r := m.(interface {
			GetJob() *sluicev1.Job
			GetBody() *httpbody.HttpBody
			GetRetryAfterSeconds() int32
		})
		job := r.GetJob()
		if !buffer.Terminal(job.GetState()) {
			w.Header().Set("Content-Type", "application/json")
			accepted(w, job.GetId(), r.GetRetryAfterSeconds())
			return nil
		}
		// The function's own answer, as if it had been called directly.
		w.Header().Set("Content-Type", bodyType(r.GetBody().GetContentType()))
		w.Header().Set("Location", "/v1/jobs/"+job.GetId())
		if code := int(job.GetResult().GetHttpStatus()); code >= 200 && code <= 599 && code != http.StatusOK {
			w.WriteHeader(code)
		}
	}
	return nil
}

// accepted answers 202 with the job's Location and, if positive, when to
// ask again.
func accepted(w http.ResponseWriter, id string, retryAfterSeconds int32) {
	w.Header().Set("Location", "/v1/jobs/"+id)
	if retryAfterSeconds > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfterSeconds)))
	}
	w.WriteHeader(http.StatusAccepted)
}

// bodyType is a function response's content type, which it may not have
// said.
func bodyType(contentType string) string {
	if contentType == "" {
		return "application/octet-stream"
	}
	return contentType
}

// routingErrorHandler answers a request for a known path with a method it
// does not take 405, where grpc-gateway's default says 501 (its status,
// UNIMPLEMENTED, stays in the body).
func routingErrorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	if httpStatus != http.StatusMethodNotAllowed {
		runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, httpStatus)
		return
	}
	errorHandler(ctx, mux, m, w, r, &runtime.HTTPStatusError{
		HTTPStatus: httpStatus,
		Err:        status.Errorf(codes.Unimplemented, "%s is not allowed on %s", r.Method, r.URL.Path),
	})
}

// errorHandler adds to grpc-gateway's default: 413 for a payload over its
// limit, 409 for the result of a job that failed or the cancel of a finished
// one, and Retry-After from a RetryInfo detail. It keeps the HTTP status of
// a runtime.HTTPStatusError.
func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	st := status.Convert(err)
	httpStatus := runtime.HTTPStatusFromCode(st.Code())
	if he, ok := errors.AsType[*runtime.HTTPStatusError](err); ok {
		st, httpStatus = status.Convert(he.Err), he.HTTPStatus
	}
	if b, ok := r.Body.(*limitedBody); ok && b.tooLarge {
		httpStatus = http.StatusRequestEntityTooLarge
		st = status.Newf(codes.InvalidArgument, "payload exceeds the function's limit of %d bytes", b.limit)
	}
	if st.Code() == codes.Unauthenticated {
		// grpc-gateway would put the message there; RFC 6750 wants the
		// scheme.
		w = bearerChallenge{w}
	}
	code, retryAfter := httpStatusOf(st)
	if code != 0 {
		httpStatus = code
	}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retryAfter.Seconds()))))
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, &runtime.HTTPStatusError{HTTPStatus: httpStatus, Err: st.Err()})
}

// httpStatusOf is the HTTP status for st where its ErrorInfo reason says
// more than its code (0 to keep grpc-gateway's mapping of the code), and
// the Retry-After its RetryInfo asks for (0 for none; at least 1s).
func httpStatusOf(st *status.Status) (code int, retryAfter time.Duration) {
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			switch d.GetReason() {
			case gateway.ReasonPayloadTooLarge:
				code = http.StatusRequestEntityTooLarge
			case gateway.ReasonJobNotSucceeded, gateway.ReasonJobFinished:
				code = http.StatusConflict
			}
		case *errdetails.RetryInfo:
			retryAfter = max(d.GetRetryDelay().AsDuration(), time.Second)
		}
	}
	return code, retryAfter
}

// streamWriterKey is the context key of a streaming call's
// http.ResponseWriter, for streamErrorHandler.
type streamWriterKey struct{}

// withStreamWriter gives a streaming call's context its ResponseWriter: an
// error that ends a stream before its first message reaches the REST
// client through streamErrorHandler, which grpc-gateway gives no writer.
func withStreamWriter(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ":watch") {
			r = r.WithContext(context.WithValue(r.Context(), streamWriterKey{}, w))
		}
		next.ServeHTTP(w, r)
	})
}

// streamErrorHandler adds Retry-After from a RetryInfo detail to the
// answer of a stream refused before its first message (a watch over its
// limits: 429), as errorHandler does for other calls.
func streamErrorHandler(ctx context.Context, err error) *status.Status {
	st := status.Convert(err)
	if w, ok := ctx.Value(streamWriterKey{}).(http.ResponseWriter); ok {
		if _, retryAfter := httpStatusOf(st); retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retryAfter.Seconds()))))
		}
	}
	return st
}

// bearerChallenge answers 401 with a Bearer challenge in WWW-Authenticate.
type bearerChallenge struct{ http.ResponseWriter }

func (b bearerChallenge) WriteHeader(code int) {
	if code == http.StatusUnauthorized {
		b.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
	}
	b.ResponseWriter.WriteHeader(code)
}
