package relay

import (
	"fmt"

	"github.com/hashicorp/vault/api"
)

// NewVaultClient is a Vault API client for the configuration's address,
// CA certificate and token (VAULT_* already applied by LoadConfig). tune,
// when not nil, adjusts the client's settings before it is made.
func NewVaultClient(cfg *Config, tune func(*api.Config) error) (*api.Client, error) {
	vc := api.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("vault client: %w", vc.Error)
	}
	vc.Address = cfg.VaultAddresses()[0] // a cluster's other nodes: relay/nodes.go
	vc.AgentAddress = ""
	if ca := cfg.Storage.Vault.CACert; ca != "" {
		if err := vc.ConfigureTLS(&api.TLSConfig{CACert: ca}); err != nil {
			return nil, fmt.Errorf("VAULT_CACERT %s: %w", quote(ca), err)
		}
	}
	if tune != nil {
		if err := tune(vc); err != nil {
			return nil, fmt.Errorf("vault client: %w", err)
		}
	}
	client, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	client.SetToken(cfg.Storage.Vault.AuthToken)
	return client, nil
}
