// Package plugin wires the backend and its paths into a Vault secrets
// engine and serves it over Vault's plugin protocol.
package plugin

import (
	"context"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	vaultplugin "github.com/hashicorp/vault/sdk/plugin"

	"github.com/vault-registry/vault-plugin-registry/backend"
	"github.com/vault-registry/vault-plugin-registry/paths"
	"github.com/vault-registry/vault-plugin-registry/version"
)

// Version is the plugin's version, set at build time with
// -ldflags "-X github.com/vault-registry/vault-plugin-registry/plugin.Version=v1.2.3"
// (or, for `go install …@v1.2.3`, taken from the build information); it
// must match the -version given to `vault plugin register`.
var Version = ""

// Factory makes one backend per mount.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := New(backend.Options{Logger: conf.Logger})
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

// New returns the framework backend around a domain backend made with opts.
func New(opts backend.Options) *framework.Backend {
	d := backend.New(opts)
	var fb *framework.Backend
	fb = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		Paths:       paths.All(d),
		Secrets:     paths.Secrets(d),
		PathsSpecial: &logical.Paths{
			Unauthenticated: paths.Unauthenticated,
			SealWrapStorage: paths.SealWrapped,
		},
		// Start-up work: the trust anchor of a new mount. Vault runs this
		// on the active node when the mount is enabled, unsealed or
		// reloaded; a standby or a performance secondary never writes, so
		// two nodes cannot make two CAs.
		InitializeFunc: func(ctx context.Context, req *logical.InitializationRequest) error {
			if !fb.WriteSafeReplicationState() {
				return nil
			}
			return d.InitializeKeys(ctx, req.Storage)
		},
		Invalidate: d.Invalidate,
		Clean:      func(context.Context) { d.Reset() },
		PeriodicFunc: func(ctx context.Context, req *logical.Request) error {
			// Only the node that may write: not a standby, not a
			// performance secondary.
			if !fb.WriteSafeReplicationState() {
				return nil
			}
			return d.Periodic(ctx, req.Storage)
		},
		RunningVersion: version.Resolve(Version),
	}
	d.SetIdentitySource(systemIdentities{fb})
	d.SetSystemView(fb.System)
	return fb
}

// systemIdentities reads Vault's identity store through the mount's system
// view, which Vault sets when it sets the mount up.
type systemIdentities struct{ fb *framework.Backend }

func (s systemIdentities) EntityInfo(id string) (*logical.Entity, error) {
	return s.fb.System().EntityInfo(id)
}

func (s systemIdentities) GroupsForEntity(id string) ([]*logical.Group, error) {
	return s.fb.System().GroupsForEntity(id)
}

// Serve runs the plugin; Vault starts it and talks to it over gRPC. One
// process serves every mount of the plugin (multiplexing).
func Serve(args []string) error {
	meta := &api.PluginAPIClientMeta{}
	flags := meta.FlagSet()
	if err := flags.Parse(args); err != nil {
		return err
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "vault-plugin-registry", Output: os.Stderr, JSONFormat: true})
	servePprof(logger) // off unless VAULT_PLUGIN_REGISTRY_PPROF is set (pprof.go)
	return vaultplugin.ServeMultiplex(&vaultplugin.ServeOpts{
		BackendFactoryFunc: Factory,
		TLSProviderFunc:    api.VaultPluginTLSProvider(meta.GetTLSConfig()),
		Logger:             logger,
	})
}

const backendHelp = `
vault-plugin-registry is the token server of a Docker registry (Registry v2
token authentication), one mount per registry service: the mount path is the
registry's "service". It stores users with bcrypt-hashed passwords and
godoauth access strings, keeps the signing keys in Vault, and mints the
registry's bearer tokens. godoauth-relay serves the registry's /auth endpoint
from it.
`
