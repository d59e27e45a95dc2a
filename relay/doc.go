// Package relay is godoauth-relay: it reads godoauth's YAML file unchanged
// and serves the registry's token endpoint (/auth) by forwarding each
// client's credentials to the vault-plugin-registry mount named by the
// request's service, and nowhere else.
//
// A token request's path: server.go (serveAuth) → request.go (parse) →
// mounts.go (is the service a mount) → route.go (by kind of credential) →
// vault.go (askPlugin: admission, batch.go or the single path) or
// identity.go (Vault identities) → plugin_call.go (the one call to Vault)
// → plugin_answer.go (read the answer or the refusal) → answer.go (the
// client's JSON).
//
// Words the code uses in one sense throughout:
//
//   - proven, unproven: a credential (a password, a Vault token sent as the
//     password) is proven while it got a token lately (credentials.go);
//     else it is unproven, and its request takes one of maxUnprovenCalls
//     places before it may call Vault, goes in a call of its own (never a
//     batch), is not retried on another node, and its timeout does not mark
//     Vault down: anyone can send unproven requests.
//   - busy: the plugin's refusal of a request it did not check
//     (tokenapi.CodeBusy, 429): it says nothing of the credential.
//   - alone: in a Vault call of its own on the single path, not in a batch.
//   - a place, a slot: a share of a bounded number of Vault calls in
//     flight: slots are all calls' (admission.go), places the unproven
//     requests' and one credential's on the proven path (credentials.go).
//   - unavailable: the relay cannot serve for a reason of Vault's or its
//     own (vault.unavailable: counted by kind in
//     godoauth_relay_vault_errors_total, logged at most once a few seconds
//     per kind); the client gets 503 with Retry-After.
package relay
