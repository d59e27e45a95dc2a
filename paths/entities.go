package paths

import (
	"github.com/hashicorp/vault/sdk/framework"

	"github.com/vault-registry/vault-plugin-registry/backend"
)

func entityPaths(b *backend.Backend) []*framework.Path {
	return identityAccessPaths(b, backend.IdentityEntity, "The name of a Vault identity entity, as `vault read identity/entity/name/<name>` shows it.",
		entitiesListHelpSynopsis, entitiesListHelpDescription, entityHelpSynopsis, entityHelpDescription)
}

const entitiesListHelpSynopsis = "List the Vault identity entities given registry access of their own on this service."

const entitiesListHelpDescription = `
Lists entity names. Use entities/<name> to read one entity's access string.
`

const entityHelpSynopsis = "Registry access of one Vault identity entity, added to that of its groups."

const entityHelpDescription = `
"name" is the name of a Vault identity entity (a person or a machine that
logs in to Vault through one or more auth methods). Write "access", an access
string as for users/<name>; "${user}" stands for the token's subject. An
invalid entry is refused with a 400 naming it, and nothing is stored.

Prefer groups/<name>: access given to groups follows people as they join and
leave them. Use an entity's own access for one CI job or one machine.
`
