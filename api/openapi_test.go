package api_test

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/api"
)

func TestOpenAPIIsTheYAMLAsJSON(t *testing.T) {
	served, err := api.OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	source, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON, fromYAML any
	if err := json.Unmarshal(served, &fromJSON); err != nil {
		t.Fatalf("served document is not JSON: %v", err)
	}
	if err := yaml.Unmarshal(source, &fromYAML); err != nil {
		t.Fatal(err)
	}
	// Through JSON, so that YAML's ints and JSON's float64s compare.
	yamlAsJSON, err := json.Marshal(fromYAML)
	if err != nil {
		t.Fatal(err)
	}
	var want any
	if err := json.Unmarshal(yamlAsJSON, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromJSON, want) {
		t.Error("the served JSON says something openapi.yaml does not")
	}
	paths := strings.Index(string(served), `"paths"`)
	submit, invoke := strings.Index(string(served), `"/v1/functions/{function}/jobs"`), strings.Index(string(served), `"/v1/functions/{function}:invoke"`)
	if paths < 0 || submit < paths || invoke < submit {
		t.Error("the served JSON does not keep openapi.yaml's order")
	}
}

func TestOpenAPIIsValid(t *testing.T) {
	doc := loadOpenAPI(t)
	if err := doc.Validate(t.Context(), openapi3.EnableSchemaPatternValidation()); err != nil {
		t.Fatalf("the OpenAPI 3 document is not valid: %v", err)
	}
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi: %q, want 3.0.3", doc.OpenAPI)
	}
	if doc.Components.SecuritySchemes["apiKey"] == nil || doc.Components.SecuritySchemes["apiKey"].Value.Scheme != "bearer" {
		t.Error("no bearer security scheme apiKey")
	}
}

// Every route the protos give the REST mux is in the OpenAPI 3 document,
// and the document names no route they do not: a new RPC's route cannot be
// forgotten, nor a removed one linger. Path parameters may be named
// differently: the document calls GetFunction's {name} {function}, as the
// other routes do (which also lets a router tell it from {function}:invoke).
func TestOpenAPIHasEveryRouteOfTheProtos(t *testing.T) {
	var swagger struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPIv2, &swagger); err != nil {
		t.Fatal(err)
	}
	var fromProtos []string
	for path, ops := range swagger.Paths {
		for method := range ops {
			fromProtos = append(fromProtos, strings.ToUpper(method)+" "+pathParameter.ReplaceAllString(path, "{}"))
		}
	}
	var documented []string
	for path, item := range loadOpenAPI(t).Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+pathParameter.ReplaceAllString(path, "{}"))
		}
	}
	slices.Sort(fromProtos)
	slices.Sort(documented)
	if len(fromProtos) == 0 {
		t.Fatal("the Swagger 2.0 document has no routes")
	}
	for _, route := range fromProtos {
		if !slices.Contains(documented, route) {
			t.Errorf("%s is a route of the protos but not in openapi.yaml", route)
		}
	}
	for _, route := range documented {
		if !slices.Contains(fromProtos, route) {
			t.Errorf("%s is in openapi.yaml but no route of the protos", route)
		}
	}
}

var pathParameter = regexp.MustCompile(`\{[^}]*\}`)

func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	b, err := api.OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(b)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}
