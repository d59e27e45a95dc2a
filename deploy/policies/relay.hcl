# godoauth-relay's Vault policy: mint registry tokens for the service
# "registry" and keep its own token alive, nothing else. For each more
# registry service add its two token paths.
#
#   vault policy write godoauth-relay deploy/policies/relay.hcl

path "registry/token" {
  capabilities = ["update"]
}

path "registry/token/refresh" {
  capabilities = ["update"]
}

# The relay renews its own (periodic) token and reads its TTL. Tokens made
# with -no-default-policy have neither without these two rules.
path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}
