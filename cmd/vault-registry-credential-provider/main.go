// Command vault-registry-credential-provider is a kubelet image credential
// provider: it logs in to Vault with the pod's service-account token (or
// the node's identity) and hands the kubelet the Vault token as the
// registry password of the user "vault". See docs/KUBERNETES.md.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/vault-registry/vault-plugin-registry/credprovider"
)

func main() {
	if err := credprovider.Main(context.Background(), os.Args[1:], os.Getenv, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, credprovider.Name+": "+err.Error())
		os.Exit(1)
	}
}
