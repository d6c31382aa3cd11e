package clustertest

import "testing"

// Env starts what one cluster-mode test needs: a 3-member etcd and one
// SeaweedFS S3 gateway, both stopped in t.Cleanup.
func Env(t testing.TB) (*Etcd, *S3) {
	t.Helper()
	return StartEtcd(t, 3), StartS3(t)
}
