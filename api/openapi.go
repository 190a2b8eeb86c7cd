// Package api holds the code generated from proto/ by `go tool buf generate`,
// and the OpenAPI 3 document of the REST API. Nothing under api/ is edited
// by hand except openapi.yaml (the document: REST details the protos cannot
// carry), this file, which embeds the documents so the gateway can serve
// them, and restclient's doc.go and generator config.
package api

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"sync"

	"go.yaml.in/yaml/v3"
)

// openAPIYAML is the OpenAPI 3.0.3 document for Sluice's REST API, written
// by hand: the generated Swagger 2.0 one cannot say that payloads and
// results are raw bodies, which headers a call takes, or what each status
// means.
//
//go:embed openapi.yaml
var openAPIYAML []byte

// OpenAPIv2 is the Swagger 2.0 document generated from proto/sluice/v1 by
// protoc-gen-openapiv2: the gRPC messages, with raw bodies shown as
// google.api.HttpBody.
//
//go:embed sluice.swagger.json
var OpenAPIv2 []byte

// OpenAPI returns the OpenAPI 3 document as indented JSON, its keys in the
// order openapi.yaml gives them. It is converted on the first call.
var OpenAPI = sync.OnceValues(func() ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(openAPIYAML, &doc); err != nil {
		return nil, fmt.Errorf("api: openapi.yaml: %w", err)
	}
	var compact bytes.Buffer
	if err := appendJSON(&compact, &doc); err != nil {
		return nil, fmt.Errorf("api: openapi.yaml: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return nil, fmt.Errorf("api: openapi.yaml as JSON: %w", err)
	}
	return out.Bytes(), nil
})

// appendJSON writes n as JSON. It walks the YAML nodes rather than
// decoding into maps, which would lose the document's order.
func appendJSON(out *bytes.Buffer, n *yaml.Node) error {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return fmt.Errorf("line %d: %d documents, want 1", n.Line, len(n.Content))
		}
		return appendJSON(out, n.Content[0])
	case yaml.AliasNode:
		return appendJSON(out, n.Alias)
	case yaml.MappingNode:
		out.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i]
			if key.Kind != yaml.ScalarNode || key.ShortTag() != "!!str" {
				return fmt.Errorf("line %d: key %q is not a string: quote it", key.Line, key.Value)
			}
			if i > 0 {
				out.WriteByte(',')
			}
			if err := appendString(out, key.Value); err != nil {
				return err
			}
			out.WriteByte(':')
			if err := appendJSON(out, n.Content[i+1]); err != nil {
				return err
			}
		}
		out.WriteByte('}')
		return nil
	case yaml.SequenceNode:
		out.WriteByte('[')
		for i, item := range n.Content {
			if i > 0 {
				out.WriteByte(',')
			}
			if err := appendJSON(out, item); err != nil {
				return err
			}
		}
		out.WriteByte(']')
		return nil
	case yaml.ScalarNode:
		return appendScalar(out, n)
	}
	return fmt.Errorf("line %d: unexpected YAML node kind %v", n.Line, n.Kind)
}

// appendScalar writes a scalar as the JSON value YAML resolves it to. A
// timestamp stays the string it was written as: JSON has no timestamps.
func appendScalar(out *bytes.Buffer, n *yaml.Node) error {
	switch n.ShortTag() {
	case "!!str", "!!timestamp":
		return appendString(out, n.Value)
	case "!!null", "!!bool", "!!int", "!!float":
		var v any
		if err := n.Decode(&v); err != nil {
			return err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("line %d: %q has no JSON form: %w", n.Line, n.Value, err)
		}
		out.Write(b)
		return nil
	}
	return fmt.Errorf("line %d: %s %q has no JSON form", n.Line, n.ShortTag(), n.Value)
}

// appendString writes s as a JSON string, leaving <, > and & as they are
// (json.Marshal would escape them, for HTML's sake).
func appendString(out *bytes.Buffer, s string) error {
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return err
	}
	out.Truncate(out.Len() - 1) // Encode's newline
	return nil
}
