# godoauth-relay's Vault policy: mint registry tokens for the service
# "registry" and keep its own token alive, nothing else. For each more
# registry service add its three token paths.
#
#   vault policy write godoauth-relay deploy/policies/relay.hcl

path "registry/token" {
  capabilities = ["update"]
}

path "registry/token/refresh" {
  capabilities = ["update"]
}

# Several token requests in one call, when many arrive at once. Without it
# the relay still works: it logs a warning and sends them one by one.
path "registry/token/batch" {
  capabilities = ["update"]
}

# The relay renews its own (periodic) token, and looks it up at start and
# before it switches to a new token from auth_token_file (a token Vault
# refuses is not used). Tokens made with -no-default-policy have neither
# without these two rules.
path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}

# With AppRole or Kubernetes auth, after a failed renewal the relay logs in
# again and revokes the token it no longer uses (best effort).
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
