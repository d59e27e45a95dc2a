package relay

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/hashicorp/vault/api"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// vaultCall is one call of the relay to Vault's API on a client's behalf:
// the plugin's token paths (the single path, token/identity, token/batch)
// and the auth mounts' logins. vault.call makes every one of them; a
// caller says only what differs.
type vaultCall struct {
	// path is the call's path after /v1/, for the request and the log.
	path string
	// segment, when set, is sent after path as one escaped path segment (a
	// user name at a password login): NewRequest would clean it with the
	// rest (path.Join).
	segment string
	// body is sent as JSON.
	body any
	// callerToken says the call carries token, not the relay's own Vault
	// token: the caller's token (token/identity), or none (a login, "").
	callerToken bool
	token       string
	// retrySafe says nodes and pluginRelaunch may send the call again
	// (retrySafe): it cannot count a failure twice.
	retrySafe bool
	// unproven says the call checks a credential that got no token lately
	// (noAnswer).
	unproven bool
	// limit bounds the answer; 0 is maxAnswerBytes.
	limit int
	// req is the client's request a token call serves, for refusal.
	req *tokenRequest
	// refused turns Vault's error answer (err is a *api.ResponseError,
	// resp its answer) or a call that got no answer into the client's
	// failure; nil is vault.refusal, the plugin's refusal of req.
	refused func(err error, resp *api.Response) *failure
	// malformed is the failure of an answer that cannot be read; nil is
	// vault.malformed.
	malformed func(err error) *failure
	// sent, when set, is told that the call holds its slot and goes.
	sent func()
}

// call makes one call to Vault: it takes a slot (enter), sends c, and
// reads the answer into answer, or turns Vault's refusal into the
// client's failure (c.refused). Checking what the answer says is the
// caller's.
func (v *vault) call(ctx context.Context, c *vaultCall, answer *vaultAnswer) *failure {
	release, f := v.enter(ctx)
	if f != nil {
		return f
	}
	defer release()
	if c.sent != nil {
		c.sent()
	}
	body, err := json.Marshal(c.body)
	if err != nil { // strings and numbers only: never happens
		return v.unavailable("unexpected", "cannot encode a request", "path", c.path)
	}
	r := v.client.NewRequest(http.MethodPut, "/v1/"+c.path)
	if c.segment != "" {
		r.URL.RawPath = r.URL.EscapedPath() + "/" + url.PathEscape(c.segment)
		r.URL.Path += "/" + c.segment
	}
	if c.callerToken {
		r.ClientToken = c.token
	}
	r.BodyBytes = body
	// Not Logical().WriteRaw: it cancels its context when it returns, so the
	// body of the answer (the token, or the refusal's code) could no longer
	// be read. RawRequestWithContext leaves the context to the caller.
	resp, err := v.client.RawRequestWithContext(retrySafe(ctx, c.retrySafe), r) //nolint:staticcheck // deprecated for historical reasons only
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		if c.refused != nil {
			return c.refused(err, resp)
		}
		return v.refusal(ctx, err, resp, c.req, c.unproven)
	}
	limit := c.limit
	if limit == 0 {
		limit = maxAnswerBytes
	}
	if err := readAnswer(resp.Body, limit, answer); err != nil {
		if ctx.Err() != nil {
			return v.noAnswer(ctx, err, c.path, c.unproven)
		}
		if c.malformed != nil {
			return c.malformed(err)
		}
		return v.malformed(c.path, err)
	}
	return nil
}

// tokenCall is a call that answers one token: the single path and
// token/identity.
func (v *vault) tokenCall(ctx context.Context, c *vaultCall) (*mintedToken, *failure) {
	var a tokenapi.Answer
	return v.tokenCallInto(ctx, c, &a, &a)
}

// tokenCallInto is tokenCall reading the answer's data into data, which
// holds the token's fields at a (token/identity's answer may carry an
// identity session beside them).
func (v *vault) tokenCallInto(ctx context.Context, c *vaultCall, data any, a *tokenapi.Answer) (*mintedToken, *failure) {
	answer := vaultAnswer{Data: data}
	if f := v.call(ctx, c, &answer); f != nil {
		return nil, f
	}
	t, err := checkMinted(a)
	if err != nil {
		return nil, v.malformed(c.path, err)
	}
	t.RequestID = answer.RequestID
	return t, nil
}

// malformed is a plugin's answer that the relay cannot take.
func (v *vault) malformed(path string, err error) *failure {
	return v.unavailable("bad_answer", "the plugin's answer is malformed", "path", path, "error", err)
}
