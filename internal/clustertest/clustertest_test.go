package clustertest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestEtcdThreeMembers: a write through one member is read through
// another, and with one member stopped the other two still commit a Txn;
// the stopped member comes back and catches up.
func TestEtcdThreeMembers(t *testing.T) {
	start := time.Now()
	c := StartEtcd(t, 3)
	t.Logf("3-member etcd startup: %v", time.Since(start).Round(time.Millisecond))
	if got := len(c.Endpoints()); got != 3 {
		t.Fatalf("Endpoints: %d, want 3", got)
	}
	if l := c.Leader(); l < 0 {
		t.Fatalf("no leader after StartEtcd")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.MemberClient(t, 0).Put(ctx, "k", "v1"); err != nil {
		t.Fatalf("put through member 0: %v", err)
	}
	resp, err := c.MemberClient(t, 2).Get(ctx, "k")
	if err != nil {
		t.Fatalf("get through member 2: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("get through member 2: %v, want k=v1", resp.Kvs)
	}

	cli := c.Client(t)
	stop := time.Now()
	c.StopMember(0)
	t.Logf("StopMember(0): %v; leader now member %d", time.Since(stop).Round(time.Millisecond), c.Leader())
	txn := time.Now()
	tr, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Value("k"), "=", "v1")).
		Then(clientv3.OpPut("k", "v2")).
		Commit()
	if err != nil {
		t.Fatalf("txn with member 0 stopped: %v", err)
	}
	if !tr.Succeeded {
		t.Fatalf("txn with member 0 stopped: compare failed")
	}
	t.Logf("first txn with member 0 stopped: %v", time.Since(txn).Round(time.Millisecond))

	restart := time.Now()
	c.RestartMember(0)
	t.Logf("RestartMember(0): %v", time.Since(restart).Round(time.Millisecond))
	resp, err = c.MemberClient(t, 0).Get(ctx, "k")
	if err != nil {
		t.Fatalf("get through restarted member 0: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v2" {
		t.Fatalf("get through restarted member 0: %v, want k=v2", resp.Kvs)
	}

	// A crashed leader: the other two elect a new one and go on.
	leader := c.Leader()
	if leader < 0 {
		t.Fatalf("no leader after RestartMember(0)")
	}
	kill := time.Now()
	c.KillMember(leader)
	if _, err := cli.Put(ctx, "k", "v3"); err != nil {
		t.Fatalf("put after killing leader %d: %v", leader, err)
	}
	t.Logf("KillMember(leader %d) to first successful put: %v; new leader %d", leader, time.Since(kill).Round(time.Millisecond), c.Leader())
	c.RestartMember(leader)
	resp, err = c.MemberClient(t, leader).Get(ctx, "k")
	if err != nil {
		t.Fatalf("get through restarted member %d: %v", leader, err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v3" {
		t.Fatalf("get through restarted member %d: %v, want k=v3", leader, resp.Kvs)
	}
}

// TestS3 writes an object, reads a byte range of it, stops SeaweedFS and
// sees a write fail, restarts it and finds the object still there.
func TestS3(t *testing.T) {
	start := time.Now()
	s := StartS3(t)
	t.Logf("SeaweedFS startup: %v", time.Since(start).Round(time.Millisecond))
	bucket := s.Bucket(t)
	cli := s.Client(t)

	data := make([]byte, 100)
	for i := range data {
		data[i] = byte(i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cli.PutObject(ctx, bucket, "obj", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put: %v", err)
	}
	got := getRange(ctx, t, cli, bucket, "obj", 10, 19)
	if !bytes.Equal(got, data[10:20]) {
		t.Fatalf("range bytes=10-19: got %v, want %v", got, data[10:20])
	}

	stop := time.Now()
	s.Stop()
	t.Logf("Stop: %v", time.Since(stop).Round(time.Millisecond))
	if _, err := cli.PutObject(ctx, bucket, "while-down", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err == nil {
		t.Fatalf("put while SeaweedFS is stopped succeeded")
	} else {
		t.Logf("put while stopped fails as it should: %v", err)
	}

	s.Start()
	if _, err := cli.PutObject(ctx, bucket, "after", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put after restart: %v", err)
	}
	if got := getRange(ctx, t, cli, bucket, "obj", 0, 99); !bytes.Equal(got, data) {
		t.Fatalf("object written before the restart: got %v, want %v", got, data)
	}

	s.Kill()
	s.Start()
	if got := getRange(ctx, t, cli, bucket, "after", 10, 19); !bytes.Equal(got, data[10:20]) {
		t.Fatalf("object written before the kill: got %v, want %v", got, data[10:20])
	}
}

func getRange(ctx context.Context, t *testing.T, cli *minio.Client, bucket, key string, first, last int64) []byte {
	t.Helper()
	var opts minio.GetObjectOptions
	if err := opts.SetRange(first, last); err != nil {
		t.Fatalf("range %d-%d: %v", first, last, err)
	}
	obj, err := cli.GetObject(ctx, bucket, key, opts)
	if err != nil {
		t.Fatalf("get %s/%s bytes=%d-%d: %v", bucket, key, first, last, err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("read %s/%s bytes=%d-%d: %v", bucket, key, first, last, err)
	}
	return b
}

// TestEnv starts both components together, as cluster tests will.
func TestEnv(t *testing.T) {
	start := time.Now()
	e, s := Env(t)
	t.Logf("Env (3-member etcd + SeaweedFS): %v", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.Client(t).Put(ctx, "head", s.Endpoint()); err != nil {
		t.Fatalf("etcd put: %v", err)
	}
	b := s.Bucket(t)
	if _, err := s.Client(t).StatObject(ctx, b, "missing", minio.StatObjectOptions{}); err == nil {
		t.Fatalf("stat of a missing object succeeded")
	} else if resp := minio.ToErrorResponse(err); resp.Code != "NoSuchKey" {
		t.Fatalf("stat of a missing object: %v, want NoSuchKey", fmt.Sprint(err))
	}
}
