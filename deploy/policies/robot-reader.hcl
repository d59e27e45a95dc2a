# registry-robot-ci: what a consumer of robot accounts needs, and no more:
# read <mount>/creds/<role>, which makes a robot under a Vault lease. The
# Vault Secrets Operator (VaultDynamicSecret), external-secrets'
# VaultDynamicSecret generator or a CI job log in with a token of this
# policy and GET the path; Vault renews and revokes the lease for them.
#
#   vault policy write registry-robot-ci deploy/policies/robot-reader.hcl
#
# One stanza per role; here the role "ci" of the service "registry".
# Reading roles/ or listing robots is the operator's (operator.hcl).
path "registry/creds/ci" {
  capabilities = ["read"]
}
