package relay

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
)

// Profiling the relay under load (`make bench`): `-pprof 127.0.0.1:6060`
// serves Go's profiles (net/http/pprof) on a second listener. Off unless
// the flag is given, and loopback only: profiles show the process's inner
// workings to whoever can reach them.

// pprofFlag adds -pprof to fs; parsing the flag starts the listener.
func pprofFlag(fs *flag.FlagSet, stderr io.Writer) {
	fs.Func("pprof", "serve Go profiles (net/http/pprof) on this loopback `address`, e.g. 127.0.0.1:6060 (off by default)",
		func(addr string) error {
			ln, err := listenPprof(addr)
			if err != nil {
				return err
			}
			fmt.Fprintf(stderr, "godoauth-relay: profiles on http://%s/debug/pprof/\n", ln.Addr())
			go func() { _ = http.Serve(ln, pprofMux()) }()
			return nil
		})
}

// listenPprof listens on addr, which must be a loopback address.
func listenPprof(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("-pprof %s: %w", quote(addr), err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("-pprof %s: profiles are served on a loopback address only (127.0.0.1, ::1, localhost)", quote(addr))
	}
	return net.Listen("tcp", addr)
}

func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // heap, allocs, goroutine… by name
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
