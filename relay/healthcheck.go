package relay

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// Healthcheck is `godoauth-relay healthcheck`: it asks a running relay's
// /healthz and exits 0 on 200, 1 otherwise. It is the container image's
// HEALTHCHECK, which has no curl. Without -url it reads http.addr (and
// http.tls) from the configuration and asks the relay on loopback.
func Healthcheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("godoauth-relay healthcheck", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", "config.yaml", "the relay's configuration `file`, for http.addr")
	url := fs.String("url", "", "the relay's /healthz `URL` (default: from the configuration's http.addr, on loopback)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	if code, ok := parseFlags(fs, args, stderr, func() {
		fmt.Fprintln(stdout, "usage: godoauth-relay healthcheck [-config FILE | -url URL] [-timeout D]\n\n"+
			"Asks a running relay's /healthz; exits 0 on 200, 1 otherwise.\n\nFlags:")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
	}); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "godoauth-relay healthcheck: unexpected argument %s\n", quote(fs.Arg(0)))
		return 2
	}
	if *url == "" {
		cfg, err := LoadConfig(*configPath, os.Getenv)
		if err != nil {
			fmt.Fprintln(stderr, "godoauth-relay healthcheck:", oneLine(err.Error()))
			return 2
		}
		*url = healthURL(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		fmt.Fprintln(stderr, "godoauth-relay healthcheck:", oneLine(err.Error()))
		return 2
	}
	// The relay's own certificate names its public host, not loopback; the
	// health check sends nothing secret.
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a loopback self-check
	}}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "godoauth-relay healthcheck:", oneLine(err.Error()))
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "godoauth-relay healthcheck: %s answered %d %s\n", *url, resp.StatusCode, oneLine(string(body)))
		return 1
	}
	fmt.Fprintln(stdout, oneLine(string(body)))
	return 0
}

// healthURL is /healthz of the relay configured by cfg, on loopback.
func healthURL(cfg *Config) string {
	host, port, _ := net.SplitHostPort(cfg.HTTP.Addr)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "http"
	if cfg.HTTP.TLS.Enabled() {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/healthz"
}
