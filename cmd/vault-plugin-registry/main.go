// Command vault-plugin-registry is the Vault plugin; Vault starts it.
package main

import (
	"fmt"
	"os"

	"github.com/vault-registry/vault-plugin-registry/plugin"
)

func main() {
	if err := plugin.Serve(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "vault-plugin-registry:", err)
		os.Exit(1)
	}
}
