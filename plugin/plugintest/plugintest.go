// Package plugintest calls a plugin backend the way Vault's HTTP API does
// and answers with the status Vault would, so that every test that calls
// the plugin in process reads statuses alike. e2e TestVaultStatus_sameAsHTTP
// checks the mapping against a real Vault server.
package plugintest

import (
	"context"
	"net/http"

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
	}
	return Status(req, resp, err), resp, msg
}

// Status is the HTTP status Vault's API answers for a request its backend
// handled with resp and err:
//   - an error: logical.RespondErrorCommon's status (a coded error's own,
//     400 for an error response, 403 for permission denied, …), and 404
//     for a path the backend does not have;
//   - no response: 404 for a read or a list (a list with an empty "keys"
//     too); 204 for any other operation;
//   - a response: the status a raw response names, else 200.
func Status(req *logical.Request, resp *logical.Response, err error) int {
	if err == logical.ErrUnsupportedPath {
		return http.StatusNotFound
	}
	code, _ := logical.RespondErrorCommon(req, resp, err)
	if err != nil {
		logical.AdjustErrorStatusCode(&code, err)
	}
	if code != 0 {
		return code
	}
	switch req.Operation {
	case logical.ReadOperation:
		if resp == nil {
			return http.StatusNotFound
		}
	case logical.ListOperation:
		if resp == nil || len(resp.Data) == 0 {
			return http.StatusNotFound
		}
		if raw, ok := resp.Data["keys"]; ok && raw != nil && len(listKeys(raw)) == 0 {
			return http.StatusNotFound
		}
	}
	if resp == nil {
		return http.StatusNoContent
	}
	if c, ok := resp.Data[logical.HTTPStatusCode].(int); ok {
		return c
	}
	return http.StatusOK
}

func listKeys(raw any) []string {
	switch keys := raw.(type) {
	case []string:
		return keys
	case []any:
		out := make([]string, 0, len(keys))
		for _, k := range keys {
			if s, ok := k.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
