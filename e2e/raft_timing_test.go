//go:build e2e

package e2e

import "testing"

// TestRaft_noUserEnumerationByTime is TestHardening_noUserEnumerationByTime
// on integrated storage: a single-node Raft Vault from a config file,
// initialised and unsealed by the test. There every storage write is a
// consensus round and an fsync, so a failure count written for a known
// user and not for an unknown one would show in the time.
func TestRaft_noUserEnumerationByTime(t *testing.T) {
	c := StartCluster(t, 1)
	v := c.Nodes[0]
	noUserEnumerationByTime(t, v, v.EnableService(t, "registry"))
}
