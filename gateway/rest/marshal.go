package rest

import (
	"errors"
	"io"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/protobuf/encoding/protojson"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/gateway"
)

// jsonOptions are the REST API's: every field, zero or not, so that a
// job's JSON has the same fields whatever its state. [gateway.JobJSON]
// writes jobs with the same options; TestMarshalerWritesJobsAsJobJSON
// holds the two together.
var jsonOptions = protojson.MarshalOptions{EmitDefaultValues: true}

// payloadMarshaler is JSON for every message except google.api.HttpBody,
// which travels raw in both directions: a submitted payload is the request
// body verbatim, and a job's result is the response body verbatim, each
// with its own Content-Type. Nobody base64-encodes anything.
type payloadMarshaler struct {
	runtime.JSONPb
}

var _ runtime.Marshaler = (*payloadMarshaler)(nil)

func newPayloadMarshaler() *payloadMarshaler {
	return &payloadMarshaler{runtime.JSONPb{
		MarshalOptions:   jsonOptions,
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}}
}

// ContentType is the body's own type for an HttpBody, JSON otherwise.
func (m *payloadMarshaler) ContentType(v any) string {
	if b, ok := v.(*httpbody.HttpBody); ok {
		return b.GetContentType()
	}
	return m.JSONPb.ContentType(v)
}

// Marshal writes an HttpBody's bytes as they are, and a job as
// [gateway.JobJSON] does (a queued one without reflection).
func (m *payloadMarshaler) Marshal(v any) ([]byte, error) {
	switch v := v.(type) {
	case *httpbody.HttpBody:
		return v.GetData(), nil
	case *sluicev1.Job:
		return gateway.JobJSON(v)
	}
	return m.JSONPb.Marshal(v)
}

// NewDecoder reads the whole body into an HttpBody target, JSON otherwise.
func (m *payloadMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		var target *httpbody.HttpBody
		switch t := v.(type) {
		case **httpbody.HttpBody:
			if *t == nil {
				*t = new(httpbody.HttpBody)
			}
			target = *t
		case *httpbody.HttpBody:
			target = t
		default:
			return m.JSONPb.NewDecoder(r).Decode(v)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		target.Data = data
		if b, ok := r.(*limitedBody); ok {
			target.ContentType = b.contentType
		}
		return nil
	})
}

// limitedBody is a request body cut off at the payload limit that
// remembers its Content-Type (a runtime.Decoder sees only the reader) and
// whether the limit was hit (so the error handler can answer 413).
type limitedBody struct {
	io.ReadCloser
	limit       int64
	contentType string
	tooLarge    bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		b.tooLarge = true
	}
	return n, err
}
