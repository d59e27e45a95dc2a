// Package relay is godoauth-relay: it reads godoauth's YAML file unchanged
// and serves the registry's token endpoint (/auth) by forwarding each
// client's credentials to the vault-plugin-registry mount named by the
// request's service, and nowhere else.
package relay
