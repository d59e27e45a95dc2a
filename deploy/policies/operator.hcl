# The registry operator's Vault policy for the service "registry": users,
# settings and keys of its plugin mount, and the "Coming from godoauth"
# migration (godoauth's mount, the temporary registry-new mount, moving
# mounts). Registering the plugin, writing policies and creating the
# relay's token stay with a Vault administrator.
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

# Enable, move (vault secrets move) and disable those mounts.
path "sys/mounts/registry" {
  capabilities = ["create", "read", "update", "delete"]
}

path "sys/mounts/registry-new" {
  capabilities = ["create", "read", "update", "delete"]
}

path "sys/mounts/registry-godoauth" {
  capabilities = ["create", "read", "update", "delete"]
}

# Vault asks for sudo on sys/remount, and with it a move can take any
# mount: drop this rule once the migration is done.
path "sys/remount" {
  capabilities = ["update", "sudo"]
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
