package relay

import (
	"fmt"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// issuerCheck compares token.issuer with the iss of the first token minted
// for each service, once: the relay's token may not read the plugin's
// config, and a registry refuses tokens whose iss is not its issuer.
type issuerCheck struct {
	want    string // token.issuer; empty: no check
	log     hclog.Logger
	checked sync.Map // service → struct{}
}

func (c *issuerCheck) check(service, iss string) {
	if c.want == "" {
		return
	}
	if _, done := c.checked.LoadOrStore(service, struct{}{}); done {
		return
	}
	if iss != c.want {
		c.log.Error("token.issuer differs from the issuer of the plugin's tokens; the registry refuses tokens "+
			"whose iss is not its own issuer setting",
			"service", service, "token.issuer", c.want, "plugin_issuer", iss,
			"fix", fmt.Sprintf("vault write %s/config issuer=%s", service, c.want))
	}
}
