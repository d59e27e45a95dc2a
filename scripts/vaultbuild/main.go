// Command vault builds the Vault server and CLI for the project's tests and
// demo. It lives in its own module so the product never links Vault's
// server code.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
