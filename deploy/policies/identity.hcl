# registry-identity: what a Vault identity (a person or a machine logged in
# through any auth method) needs to get registry tokens for itself.
# Attach it to the auth method's roles or users (token_policies), e.g.
#   vault policy write registry-identity deploy/policies/identity.hcl
#   vault write auth/userpass/users/alice password=… token_policies=registry-identity
#
# One stanza per registry service (the plugin's mount path); here the
# service "registry". Name each service: a glob such as "+/token/identity"
# would also match a path of that name in any other secrets engine.
path "registry/token/identity" {
  capabilities = ["update"]
}

# With identity.password_mounts or jwt_logins, the relay revokes the Vault
# token a login got once a newer login has replaced it (token_reuse), with
# that token itself. Vault's default policy allows it; a role made with
# token_no_default_policy needs this rule (without it the token lives to
# its TTL).
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
