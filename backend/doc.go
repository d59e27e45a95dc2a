// Package backend is the domain of vault-plugin-registry: users and their
// access strings, the signing keys kept in Vault's storage, and the minting
// of registry bearer tokens. It knows nothing of HTTP or framework.Path; the
// paths package turns its results and errors into Vault responses.
package backend
