package credprovider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// requestTimeout bounds each Vault call; with Vault's client retries a
// run ends well within the kubelet's wait for a provider.
const requestTimeout = 10 * time.Second

// Main is the whole program: the kubelet's request on stdin, the response
// on stdout. The error it returns is one line without secrets, for the
// kubelet's log.
func Main(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout io.Writer) error {
	c, err := ParseConfig(args, getenv)
	if err != nil {
		return err
	}
	req, err := ReadRequest(stdin)
	if err != nil {
		return err
	}
	// Whatever Vault or a library says, the service-account token stays out.
	redact := func(err error) error {
		msg := oneLine(err)
		if t := req.ServiceAccountToken; t != "" {
			msg = strings.ReplaceAll(msg, t, "<service-account token>")
		}
		return errors.New(msg)
	}
	vc := api.DefaultConfig() // VAULT_ADDR, VAULT_CACERT, VAULT_NAMESPACE, …
	if vc.Error != nil {
		return redact(fmt.Errorf("Vault client settings: %w", vc.Error))
	}
	vc.Timeout = requestTimeout
	client, err := api.NewClient(vc)
	if err != nil {
		return redact(fmt.Errorf("Vault client: %w", err))
	}
	client.ClearToken() // logins go without one; VAULT_TOKEN plays no part
	resp, err := Provide(ctx, c, client, req)
	if err != nil {
		return redact(err)
	}
	if err := json.NewEncoder(stdout).Encode(resp); err != nil {
		return redact(fmt.Errorf("writing the response: %w", err))
	}
	return nil
}

// oneLine is an error as one line: Vault's refusals are several lines
// (URL, code, errors), reduced here to the code and Vault's reasons.
func oneLine(err error) string {
	var re *api.ResponseError
	if errors.As(err, &re) {
		reasons := strings.Join(re.Errors, "; ")
		if reasons == "" {
			reasons = "no reason given"
		}
		// Keep the context the callers wrapped around Vault's error.
		prefix, _, _ := strings.Cut(err.Error(), re.Error())
		err = fmt.Errorf("%sVault answered %d: %s", prefix, re.StatusCode, reasons)
	}
	return strings.Join(strings.Fields(err.Error()), " ")
}
