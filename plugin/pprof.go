package plugin

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"

	"github.com/hashicorp/go-hclog"
)

// PprofEnv names a loopback address on which the plugin process serves
// Go's profiles (net/http/pprof), for measuring it under load (`make
// bench`). Unset, the default, means no listener. Vault passes it to the
// plugin when it is registered with
// `vault plugin register -env VAULT_PLUGIN_REGISTRY_PPROF=127.0.0.1:6061 …`.
// Loopback only: profiles show the process's inner workings.
const PprofEnv = "VAULT_PLUGIN_REGISTRY_PPROF"

// servePprof starts the profile listener when PprofEnv asks for one. A bad
// address is logged and ignored: profiling never stops the plugin.
func servePprof(logger hclog.Logger) {
	addr := os.Getenv(PprofEnv)
	if addr == "" {
		return
	}
	ln, err := listenLoopback(addr)
	if err != nil {
		logger.Error("no profile listener", "env", PprofEnv, "error", err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // heap, allocs, goroutine… by name
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	logger.Info("serving profiles", "address", "http://"+ln.Addr().String()+"/debug/pprof/")
	go func() { _ = http.Serve(ln, mux) }()
}

func listenLoopback(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("%q is not a loopback address (127.0.0.1, ::1, localhost)", addr)
	}
	return net.Listen("tcp", addr)
}
