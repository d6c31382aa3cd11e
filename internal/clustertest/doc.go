// Package clustertest starts the real components a cluster-mode Arbor
// server depends on, on loopback, for tests in other packages: an
// in-process etcd cluster (StartEtcd, through etcd's embed package) and a
// SeaweedFS process serving the S3 API (StartS3). Nothing here is a mock:
// the tests talk to a real etcd over gRPC and to a real S3 gateway over
// HTTP, and can stop and restart either to see how the cluster copes.
//
// Every helper takes a testing.TB, picks free 127.0.0.1 ports, keeps its
// data under t.TempDir() and registers its own shutdown with t.Cleanup.
// Helpers that start something call t.Fatal on failure, so call them from
// the test's goroutine.
//
// SeaweedFS is an external binary. StartS3 takes its path from the
// ARBOR_SEAWEEDFS environment variable (.ci/run exports it) or else runs
// .ci/seaweedfs.sh from the module root, which builds it once per machine
// into a cache outside the checkout. If neither yields a binary the test
// fails: it is never skipped.
//
// Costs on a 2-core machine: a 3-member etcd serves in about 0.1 s; a
// fresh SeaweedFS in 10-13 s, and again about 15 s after S3.Start, since
// its master refuses writes for 15 s after restarting on existing volumes.
// Starting one S3 in a parent test and running the cases as its subtests
// (t.Run, a bucket each from S3.Bucket) saves most of that.
package clustertest
