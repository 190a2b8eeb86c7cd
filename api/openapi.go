// Package api holds the code generated from proto/ by `go tool buf generate`.
// Nothing under api/ is edited by hand except this file, which only embeds
// the generated OpenAPI document so the gateway can serve it.
package api

import _ "embed"

// OpenAPI is the OpenAPI v2 document for Sluice's REST API, generated from
// proto/sluice/v1 by protoc-gen-openapiv2.
//
//go:embed sluice.swagger.json
var OpenAPI []byte
