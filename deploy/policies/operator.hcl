# The registry operator's Vault policy for the service "registry": users,
# settings and keys of its plugin mount, and the "Coming from godoauth"
# migration (godoauth's mount, the temporary registry-new mount, moving
# mounts, and only those). Registering the plugin (deploy/policies/
# register.hcl), writing policies and creating the relay's token stay with
# a Vault administrator. For another service, replace "registry" in every
# path and parameter value below.
#
#   vault policy write registry-operator deploy/policies/operator.hcl

# The plugin mount: config, users, refresh tokens, ca, keys, token.
path "registry/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

# The migration: the plugin at a temporary path, godoauth's mount kept
# under another name for a roll-back.
path "registry-new/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

path "registry-godoauth/*" {
  capabilities = ["read", "list"]
}

# Enable, move (vault secrets move) and disable those mounts. Only the
# plugin may be enabled there: another engine type (aws, kubernetes, ...)
# could use the Vault server's own cloud credentials.
path "sys/mounts/registry" {
  capabilities = ["create", "read", "update", "delete"]
  allowed_parameters = {
    "type" = ["vault-plugin-registry"]
    "*"    = []
  }
}

path "sys/mounts/registry-new" {
  capabilities = ["create", "read", "update", "delete"]
  allowed_parameters = {
    "type" = ["vault-plugin-registry"]
    "*"    = []
  }
}

path "sys/mounts/registry-godoauth" {
  capabilities = ["create", "read", "update", "delete"]
  allowed_parameters = {
    "type" = ["vault-plugin-registry"]
    "*"    = []
  }
}

# Vault asks for sudo on sys/remount. Without limits a move could take any
# mount (another team's payments/ to registry-new/, read, move back), so
# both ends must be one of the three mounts above, as `vault secrets move`
# writes them (with the trailing slash) or as the API takes them.
path "sys/remount" {
  capabilities = ["update", "sudo"]
  allowed_parameters = {
    "from" = ["registry", "registry/", "registry-new", "registry-new/", "registry-godoauth", "registry-godoauth/"]
    "to"   = ["registry", "registry/", "registry-new", "registry-new/", "registry-godoauth", "registry-godoauth/"]
  }
}

path "sys/remount/status/*" {
  capabilities = ["read"]
}

# What `godoauth-relay migrate` and the CLI read about a mount.
path "sys/internal/ui/mounts/registry" {
  capabilities = ["read"]
}

path "sys/internal/ui/mounts/registry-new" {
  capabilities = ["read"]
}

path "sys/internal/ui/mounts/registry-godoauth" {
  capabilities = ["read"]
}
