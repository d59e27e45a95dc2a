# vault-plugin-registry-register: what deploy/systemd/
# vault-plugin-registry-register.service needs to register the plugin,
# nothing else (Vault asks for sudo on the plugin catalog). It cannot
# register or remove another plugin, enable mounts or read secrets.
#
#   vault policy write vault-plugin-registry-register deploy/policies/register.hcl
#   vault token create -policy=vault-plugin-registry-register -no-default-policy \
#     -orphan -ttl=1h -field=token > /etc/vault-plugin-registry/vault-token
#
# The token is needed when the unit registers a new binary; make one for
# each upgrade, as above (a token that expired only fails the unit's later
# runs: the catalog keeps the plugin registered).
path "sys/plugins/catalog/secret/vault-plugin-registry" {
  capabilities = ["create", "update", "sudo"]
}
