// Package api holds the document of Blueprint's public HTTP API,
// openapi.yaml (OpenAPI 3.1), compiled into the binary so that the gateway
// serves the very document its contract test holds it to.
package api

import _ "embed" // for //go:embed

// OpenAPI is openapi.yaml: every route of the gateway, its parameters,
// bodies, headers and statuses. The gateway serves it at GET /openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
