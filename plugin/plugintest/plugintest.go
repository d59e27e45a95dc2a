// Package plugintest calls a plugin backend the way Vault's HTTP API does
// and answers with the status Vault would, so that every test that calls
// the plugin in process reads statuses alike. e2e TestVaultStatus_sameAsHTTP
// checks the mapping against a real Vault server.
package plugintest

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"
)

// Call runs req on b as Vault does: a write becomes a create when the
// path's existence check says the object is not there. It returns Vault's
// HTTP status, the response, and the error text a client would see.
func Call(ctx context.Context, b logical.Backend, req *logical.Request) (int, *logical.Response, string) {
	if req.Operation == logical.UpdateOperation || req.Operation == logical.CreateOperation {
		if checkFound, exists, err := b.HandleExistenceCheck(ctx, req); err == nil && checkFound && !exists {
			req.Operation = logical.CreateOperation
		}
	}
	resp, err := b.HandleRequest(ctx, req)
	msg := ""
	switch {
	case err != nil:
		msg = err.Error()
	case resp != nil && resp.IsError():
		msg = resp.Error().Error()
	case resp != nil && resp.Data[logical.HTTPRawBody] != nil:
		// A raw answer (a token path's refusal): Vault's error list in it.
		var body struct{ Errors []string }
		if raw, ok := resp.Data[logical.HTTPRawBody].(string); ok && json.Unmarshal([]byte(raw), &body) == nil {
			msg = strings.Join(body.Errors, "; ")
		}
	}
	return Status(req, resp, err), resp, msg
}

// Status is the HTTP status Vault's API answers for a request its backend
// handled with resp and err: logical.RespondErrorCommon's (the sdk's share
// of Vault's HTTP layer: errors, a read with no response, an empty list);
// 404 for a path the backend does not have; then 204 with no response, the
// status a raw response names, or 200.
func Status(req *logical.Request, resp *logical.Response, err error) int {
	if err == logical.ErrUnsupportedPath {
		return http.StatusNotFound
	}
	code, _ := logical.RespondErrorCommon(req, resp, err)
	if err != nil {
		logical.AdjustErrorStatusCode(&code, err)
	}
	switch {
	case code != 0:
		return code
	case resp == nil:
		return http.StatusNoContent
	}
	// As Vault's HTTP layer reads a raw answer's status: over gRPC it
	// arrives as a JSON number.
	switch c := resp.Data[logical.HTTPStatusCode].(type) {
	case int:
		return c
	case float64:
		return int(c)
	case json.Number:
		if n, err := c.Int64(); err == nil {
			return int(n)
		}
	}
	return http.StatusOK
}
