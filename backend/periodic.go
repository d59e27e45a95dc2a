package backend

import (
	"context"
	"errors"

	"github.com/hashicorp/vault/sdk/logical"
)

// Periodic is the mount's housekeeping, run by Vault about once a minute
// on the node that may write: key rotation and pruning, and the removal of
// expired refresh tokens and identity sessions.
func (b *Backend) Periodic(ctx context.Context, s logical.Storage) error {
	keysErr := b.MaintainKeys(ctx, s)
	pruned, tokensErr := b.PruneRefreshTokens(ctx, s)
	if pruned > 0 {
		b.logger.Debug("pruned expired refresh tokens", "count", pruned)
	}
	sessions, sessionsErr := b.PruneIdentitySessions(ctx, s)
	if sessions > 0 {
		b.logger.Debug("pruned expired identity sessions", "count", sessions)
	}
	return errors.Join(keysErr, tokensErr, sessionsErr)
}
