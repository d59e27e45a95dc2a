// Command godoauth-relay serves godoauth's token endpoint from the
// vault-plugin-registry mounts, reading godoauth's YAML file unchanged.
// `godoauth-relay migrate` moves godoauth's users and keys into a mount;
// `godoauth-relay healthcheck` is the container image's health check;
// `godoauth-relay help` lists the commands.
package main

import (
	"os"

	// Mozilla's root certificates, used only where the system has none
	// (the FROM scratch image, minimal hosts): a Vault with a public CA's
	// certificate (HCP Vault, ACME) then works without a CA mount.
	_ "golang.org/x/crypto/x509roots/fallback"

	"github.com/vault-registry/vault-plugin-registry/relay"
	"github.com/vault-registry/vault-plugin-registry/relay/migrate"
)

// commands are the relay's commands besides serve, help and version.
var commands = map[string]relay.Subcommand{
	"migrate":     {Summary: "move godoauth's users and key pair into a plugin mount", Run: migrate.Main},
	"healthcheck": {Summary: "ask a running relay's /healthz; exit 0 on 200 (the image's health check)", Run: relay.Healthcheck},
}

func main() {
	os.Exit(relay.Main(os.Args[1:], os.Stdout, os.Stderr, commands))
}
