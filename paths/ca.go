package paths

import (
	"context"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/backend"
)

func caPaths(b *backend.Backend) []*framework.Path {
	h := &caHandler{b: b}
	return []*framework.Path{
		{
			Pattern: "ca$",
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: h.read, Summary: "Read the trust anchor: certificate, key type, expiry, fingerprint."},
			},
			HelpSynopsis:    caHelpSynopsis,
			HelpDescription: caHelpDescription,
		},
		{
			Pattern: "ca/pem$",
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: h.pem, Summary: "The PEM bundle for the registry's rootcertbundle (no Vault token needed)."},
			},
			HelpSynopsis:    caPEMHelpSynopsis,
			HelpDescription: caPEMHelpDescription,
		},
		{
			Pattern: "ca/generate$",
			Fields: map[string]*framework.FieldSchema{
				"key_type": {Type: framework.TypeString, Description: "ec, rsa or ed25519; default the config's key_type."},
				"stage":    {Type: framework.TypeBool, Description: "Only publish the new CA in ca/pem next to the active one; keys/rotate activates it once every registry has loaded the new bundle. No token is refused on the way."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: h.generate, Summary: "Make a new trust anchor and signing keys inside Vault."},
			},
			HelpSynopsis:    caGenerateHelpSynopsis,
			HelpDescription: caGenerateHelpDescription,
		},
		{
			Pattern: "ca/import$",
			Fields: map[string]*framework.FieldSchema{
				"certificate": {Type: framework.TypeString, Description: "PEM certificate the registries trust (godoauth's token.certificate, server.pem)."},
				"private_key": {Type: framework.TypeString, Description: "Its PEM private key: RSA or EC, PKCS#1, PKCS#8 or SEC1 (godoauth's token.key). Never returned.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: h.importCA, Summary: "Use an existing certificate and key as trust anchor and signer."},
			},
			HelpSynopsis:    caImportHelpSynopsis,
			HelpDescription: caImportHelpDescription,
		},
		{
			Pattern: "jwks$",
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: h.jwks, Summary: "The JWK set of the verification keys (no Vault token needed)."},
			},
			HelpSynopsis:    jwksHelpSynopsis,
			HelpDescription: jwksHelpDescription,
		},
	}
}

type caHandler struct{ b *backend.Backend }

func (h *caHandler) read(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ring, err := h.b.Keys(ctx, req.Storage)
	if err != nil {
		return respond(err)
	}
	return caResponse(ring), nil
}

func caResponse(ring *backend.KeyRing) *logical.Response {
	ca := ring.CAs()[0]
	return &logical.Response{Data: map[string]any{
		"certificate": ca.PEM,
		"key_type":    ca.KeyType,
		"expires":     timestamp(ca.NotAfter),
		"fingerprint": ca.Fingerprint,
		"imported":    ca.Imported,
		"bundle":      string(ring.Bundle()),
		"current_key": ring.Current().ID,
		"staged":      staged(ring),
	}}
}

// staged describes a staged trust anchor, or is nil when there is none.
func staged(ring *backend.KeyRing) any {
	for _, ca := range ring.CAs() {
		if ca.Staged {
			return map[string]any{"fingerprint": ca.Fingerprint, "key_type": ca.KeyType, "expires": timestamp(ca.NotAfter)}
		}
	}
	return nil
}

func (h *caHandler) pem(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ring, err := h.b.Keys(ctx, req.Storage)
	if err != nil {
		return respond(err)
	}
	return rawResponse("application/x-pem-file", ring.Bundle()), nil
}

func (h *caHandler) jwks(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ring, err := h.b.Keys(ctx, req.Storage)
	if err != nil {
		return respond(err)
	}
	return rawResponse("application/jwk-set+json", ring.JWKS()), nil
}

func rawResponse(contentType string, body []byte) *logical.Response {
	return &logical.Response{Data: map[string]any{
		logical.HTTPContentType: contentType,
		logical.HTTPRawBody:     body,
		logical.HTTPStatusCode:  http.StatusOK,
	}}
}

func (h *caHandler) generate(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	ring, err := h.b.GenerateCA(ctx, req.Storage, d.Get("key_type").(string), d.Get("stage").(bool))
	if err != nil {
		return respond(err)
	}
	return caResponse(ring), nil
}

func (h *caHandler) importCA(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	ring, err := h.b.ImportCA(ctx, req.Storage, d.Get("certificate").(string), d.Get("private_key").(string))
	if err != nil {
		return respond(err)
	}
	return caResponse(ring), nil
}

const caHelpSynopsis = "The trust anchor the registries verify tokens against."

const caHelpDescription = `
Returns the active trust anchor's certificate, key type, expiry and SHA-256
fingerprint, whether it was imported, the whole bundle (the active anchor and
any older one still trusted) and the current signing key's id. The private key
is never returned. Vault makes the anchor when the mount is enabled (on the
active node); until the mount signs its first token, writing config key_type
remakes it in that type, and ca/import replaces it outright. A mount without
an anchor answers 404: reads never make keys.
`

const caPEMHelpSynopsis = "The PEM bundle for the registry's auth.token.rootcertbundle; no Vault token needed."

const caPEMHelpDescription = `
Answers the raw PEM (Content-Type application/x-pem-file), so that

  curl -o bundle.pem $VAULT_ADDR/v1/<service>/ca/pem

gives the file a registry's rootcertbundle points at. After ca/generate the
bundle holds the new anchor and the old one, until nothing the old one signed
can still be valid.
`

const caGenerateHelpSynopsis = "Replace the trust anchor with a new CA made inside Vault."

const caGenerateHelpDescription = `
Makes a new CA and signing keys; the old CA and keys stay published until the
tokens they signed have expired (max_ttl plus 60s). Registries must load the
new bundle from ca/pem (a restart) before they accept tokens signed under the
new CA. Signing-key rotation (keys/rotate) needs no such step.

With stage=true nothing changes for tokens: the new CA is only added to
ca/pem. Re-fetch ca/pem into every registry and restart them at leisure, then
"vault write -f <service>/keys/rotate" makes the staged CA the signer. This
also moves an imported godoauth key pair to a CA kept in Vault without a
refused token.
`

const caImportHelpSynopsis = "Use an existing certificate and private key (godoauth's) as trust anchor and signer."

const caImportHelpDescription = `
For a move from godoauth: registries that trust server.pem through their
rootcertbundle keep working unchanged. The key signs tokens directly, so it
cannot be rotated with keys/rotate; move to a CA kept in Vault with
ca/generate when the registries can be restarted.

  vault write <service>/ca/import certificate=@server.pem private_key=@server.key
`

const jwksHelpSynopsis = "The JSON Web Key Set of every published key (next, current, retired); no Vault token needed."

const jwksHelpDescription = `
For registry v3's auth.token.jwks option: each key's kid is the one tokens
carry. Refresh the registry's file from here; the next key is published
before it signs, so a refreshed file never misses a key.
`
