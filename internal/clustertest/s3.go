package clustertest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3StartTimeout bounds the wait for a started SeaweedFS to serve S3
// requests end to end. A fresh start takes a few seconds: weed starts the
// filer 1 s and the S3 gateway 2 s after the master and volume server.
const s3StartTimeout = 90 * time.Second

// s3StopTimeout bounds the wait for SeaweedFS to exit after SIGTERM before
// Stop kills it. It exits in under a second here; without
// -master.peers=none it was seen not to exit at all (volume server and
// filer stopped, master and S3 gateway stayed up).
const s3StopTimeout = 5 * time.Second

// readyBucket is the bucket StartS3 and Start write to and read from to
// prove that S3 serves; it stays, so tests see it in ListBuckets.
const readyBucket = "clustertest-ready"

// S3 is a SeaweedFS process (master, volume server, filer and S3 gateway in
// one `weed server -s3`) on 127.0.0.1. Create it with StartS3; it is killed
// in t.Cleanup.
type S3 struct {
	// AccessKey and SecretKey are the credentials of the one identity the
	// gateway knows; it may do anything (SeaweedFS action "Admin").
	AccessKey, SecretKey string
	// Region is the region clients must sign for: "us-east-1".
	Region string

	t        testing.TB
	bin      string
	dataDir  string
	sockDir  string
	home     string
	logPath  string
	config   string
	ports    weedPorts
	nbuckets atomic.Int64

	mu     sync.Mutex
	proc   *weedProc
	starts int
}

type weedPorts struct {
	master, masterGrpc, volume, volumeGrpc, filer, filerGrpc, s3, s3Grpc int
}

type weedProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // cmd.Wait's result, set before done closes
}

// StartS3 starts SeaweedFS serving the S3 API on a free loopback port, with
// its data under t.TempDir(), and waits until a bucket can be created and
// an object written and read back (about 10-13 s on 2 cores: the filer
// registers with the master only after a few seconds of peer checks, and
// S3 writes fail until it has). The binary comes from ARBOR_SEAWEEDFS or
// .ci/seaweedfs.sh; if neither yields one, the test fails.
// The process's output goes to a file printed with t.Log if the test fails.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	bin, err := weedBinary()
	if err != nil {
		t.Fatalf("clustertest: SeaweedFS binary: %v", err)
	}
	// TempDir before Cleanup: cleanups run last-registered first, and the
	// process must be dead before its data dir is removed.
	base := t.TempDir()
	// Unix socket paths are limited to about 100 bytes; t.TempDir() paths
	// carry the test name and can be longer.
	sockDir, err := os.MkdirTemp("", "weed")
	if err != nil {
		t.Fatalf("clustertest: socket dir for SeaweedFS: %v", err)
	}
	s := &S3{
		AccessKey: "arbortest",
		SecretKey: "arbortest-secret-key",
		Region:    "us-east-1",
		t:         t,
		bin:       bin,
		sockDir:   sockDir,
		home:      filepath.Join(base, "home"),
		logPath:   filepath.Join(base, "weed.log"),
		config:    filepath.Join(base, "s3.json"),
	}
	t.Cleanup(s.cleanup)
	if err := os.MkdirAll(s.home, 0o700); err != nil {
		t.Fatalf("clustertest: SeaweedFS home dir: %v", err)
	}
	if err := s.writeConfig(); err != nil {
		t.Fatalf("clustertest: %v", err)
	}
	start := time.Now()
	const attempts = 5
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(8)
		if err != nil {
			t.Fatalf("clustertest: SeaweedFS: %v", err)
		}
		s.ports = weedPorts{ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6], ports[7]}
		s.dataDir = filepath.Join(base, fmt.Sprintf("data%d", attempt))
		if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
			t.Fatalf("clustertest: SeaweedFS data dir: %v", err)
		}
		s.mu.Lock()
		err = s.startLocked()
		s.mu.Unlock()
		if err == nil {
			break
		}
		if !errors.Is(err, errWeedPortTaken) || attempt == attempts {
			s.dumpLog()
			t.Fatalf("clustertest: start SeaweedFS: %v", err)
		}
		t.Logf("clustertest: SeaweedFS port taken before bind, retrying with new ports: %v", err)
	}
	t.Logf("clustertest: SeaweedFS S3 serving in %v at %s", time.Since(start).Round(time.Millisecond), s.Endpoint())
	return s
}

// writeConfig writes the -s3.config file: one identity with all rights.
func (s *S3) writeConfig() error {
	type cred struct {
		AccessKey string `json:"accessKey"`
		SecretKey string `json:"secretKey"`
	}
	type identity struct {
		Name        string   `json:"name"`
		Credentials []cred   `json:"credentials"`
		Actions     []string `json:"actions"`
	}
	cfg := struct {
		Identities []identity `json:"identities"`
	}{[]identity{{
		Name:        "arbor",
		Credentials: []cred{{s.AccessKey, s.SecretKey}},
		Actions:     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("encode SeaweedFS S3 config: %w", err)
	}
	if err := os.WriteFile(s.config, b, 0o600); err != nil {
		return fmt.Errorf("write SeaweedFS S3 config: %w", err)
	}
	return nil
}

func (s *S3) args() []string {
	p := s.ports
	return []string{
		// glog otherwise also writes log files into $TMPDIR.
		"-logtostderr",
		"server",
		"-ip=127.0.0.1",
		"-ip.bind=127.0.0.1",
		"-dir=" + s.dataDir,
		// One master, no raft peers: it elects itself at once, also when
		// it restarts on existing state (otherwise it waits out
		// -master.electionTimeout, 10 s, to find no peer).
		"-master.peers=none",
		"-master.port=" + strconv.Itoa(p.master),
		"-master.port.grpc=" + strconv.Itoa(p.masterGrpc),
		"-volume.port=" + strconv.Itoa(p.volume),
		"-volume.port.grpc=" + strconv.Itoa(p.volumeGrpc),
		"-filer.port=" + strconv.Itoa(p.filer),
		"-filer.port.grpc=" + strconv.Itoa(p.filerGrpc),
		"-s3",
		"-s3.port=" + strconv.Itoa(p.s3),
		"-s3.port.grpc=" + strconv.Itoa(p.s3Grpc),
		"-s3.config=" + s.config,
		// Both default to fixed ports (8181, 9101) that would collide
		// between two SeaweedFS processes; 0 turns them off.
		"-s3.port.iceberg=0",
		"-s3.port.lance=0",
		"-filer.localSocket=" + filepath.Join(s.sockDir, "filer.sock"),
		"-s3.localSocket=" + filepath.Join(s.sockDir, "s3.sock"),
		// Volumes grow as written (no preallocation); a small limit keeps
		// each one small, and enough of them are allowed for many buckets
		// (each bucket is a collection with volumes of its own).
		// ARBOR_SEAWEEDFS_VOLUMES raises the count for large benchmarks
		// (the 10^8-record import needs about 17 GB).
		"-master.volumeSizeLimitMB=64",
		"-volume.max=" + cmp.Or(os.Getenv("ARBOR_SEAWEEDFS_VOLUMES"), "100"),
		// Without this a SIGTERM'd volume server waits 10 s before exiting.
		"-volume.preStopSeconds=0",
		// On by default: it would report to a host on the internet.
		"-master.telemetry=false",
	}
}

// errWeedPortTaken marks a start that failed because a port was taken.
var errWeedPortTaken = errors.New("a SeaweedFS port is already in use")

// startLocked starts the process with s's ports and data dir and waits
// until S3 serves; on failure the process is killed. s.mu is held.
func (s *S3) startLocked() error {
	s.starts++
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open SeaweedFS log: %w", err)
	}
	defer logf.Close() // the child has its own copy of the descriptor
	logStart, _ := logf.Seek(0, io.SeekEnd)
	args := s.args()
	fmt.Fprintf(logf, "=== clustertest: start %d at %s: %s %s\n", s.starts, time.Now().Format(time.RFC3339Nano), s.bin, strings.Join(args, " "))
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dataDir
	cmd.Env = append(os.Environ(),
		// Keep ~/.seaweedfs/*.toml of whoever runs the tests out of it,
		// and whatever it writes to the temp dir inside the test's.
		"HOME="+s.home,
		"TMPDIR="+s.home,
		// One volume per bucket on first write, not 7.
		"WEED_MASTER_VOLUME_GROWTH_COPY_1=1",
		// A fresh master otherwise holds volume allocation for a few
		// seconds in case servers with older volumes report in.
		"WEED_MASTER_VOLUME_GROWTH_ALLOCATION_DEFERRAL=0s",
	)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	p := &weedProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.proc = p
	if err := s.waitReady(p); err != nil {
		s.killLocked()
		if log := readFrom(s.logPath, logStart); strings.Contains(log, "address already in use") {
			return fmt.Errorf("%w: %w", errWeedPortTaken, err)
		}
		return err
	}
	return nil
}

// waitReady polls until S3 lists buckets and round-trips an object, or p
// exits, or s3StartTimeout passes. Listening is not enough: the gateway
// accepts requests before the filer and volume server are ready to store.
func (s *S3) waitReady(p *weedProc) error {
	cli, err := s.newClient(1)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(s3StartTimeout)
	var last error
	for {
		select {
		case <-p.done:
			return fmt.Errorf("SeaweedFS exited while starting (%v); last S3 error: %v", p.err, last)
		default:
		}
		last = s.roundTrip(cli)
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("SeaweedFS S3 at %s not ready after %v: %w", s.Endpoint(), s3StartTimeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// roundTrip lists buckets and writes and reads back readyBucket/probe.
// The bucket stays: after a restart a write to a collection that already
// has a volume works at once, while a new bucket's first write waits out
// the master's warmup (15 s after it becomes leader on existing volumes).
func (s *S3) roundTrip(cli *minio.Client) error {
	// Generous per attempt: after a restart the gateway holds writes
	// (retrying inside) until the master's warmup ends, rather than
	// failing them; cutting them short only stacks up retries.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.ListBuckets(ctx); err != nil {
		return fmt.Errorf("list buckets: %w", err)
	}
	if err := cli.MakeBucket(ctx, readyBucket, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		var resp minio.ErrorResponse
		if !errors.As(err, &resp) || resp.Code != "BucketAlreadyOwnedByYou" && resp.Code != "BucketAlreadyExists" {
			return fmt.Errorf("create bucket %s: %w", readyBucket, err)
		}
	}
	want := []byte("clustertest readiness probe " + time.Now().String())
	if _, err := cli.PutObject(ctx, readyBucket, "probe", bytes.NewReader(want), int64(len(want)), minio.PutObjectOptions{}); err != nil {
		return fmt.Errorf("put %s/probe: %w", readyBucket, err)
	}
	obj, err := cli.GetObject(ctx, readyBucket, "probe", minio.GetObjectOptions{})
	if err != nil {
		return fmt.Errorf("get %s/probe: %w", readyBucket, err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil {
		return fmt.Errorf("read %s/probe: %w", readyBucket, err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("read %s/probe: got %q, want %q", readyBucket, got, want)
	}
	return nil
}

// Endpoint returns the S3 endpoint, http://127.0.0.1:port.
func (s *S3) Endpoint() string {
	return fmt.Sprintf("http://127.0.0.1:%d", s.ports.s3)
}

// HostPort returns the S3 endpoint without scheme, 127.0.0.1:port, as
// minio-go's New wants it.
func (s *S3) HostPort() string {
	return fmt.Sprintf("127.0.0.1:%d", s.ports.s3)
}

func (s *S3) newClient(maxRetries int) (*minio.Client, error) {
	cli, err := minio.New(s.HostPort(), &minio.Options{
		Creds:      credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region:     s.Region,
		MaxRetries: maxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("minio client for %s: %w", s.Endpoint(), err)
	}
	return cli, nil
}

// Client returns a minio-go client for the gateway with path-style
// addressing and no retries, so a test sees each failure as it happens.
func (s *S3) Client(t testing.TB) *minio.Client {
	t.Helper()
	cli, err := s.newClient(1)
	if err != nil {
		t.Fatalf("clustertest: %v", err)
	}
	return cli
}

// Bucket creates a bucket with a fresh name and returns the name.
func (s *S3) Bucket(t testing.TB) string {
	t.Helper()
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatalf("clustertest: random bucket name: %v", err)
	}
	name := fmt.Sprintf("arbor-%s-%d", hex.EncodeToString(r[:]), s.nbuckets.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client(t).MakeBucket(ctx, name, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		t.Fatalf("clustertest: create bucket %s at %s: %v", name, s.Endpoint(), err)
	}
	return name
}

// Stop stops SeaweedFS with SIGTERM (SIGKILL if it has not exited after
// 5 s); Start brings it back on the same ports and data. Stopping a
// stopped S3 does nothing.
func (s *S3) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	if p == nil {
		return
	}
	s.proc = nil
	_ = signalGroup(p.cmd.Process, sigTerm)
	select {
	case <-p.done:
	case <-time.After(s3StopTimeout):
		s.t.Logf("clustertest: SeaweedFS still running %v after SIGTERM; killing it", s3StopTimeout)
		_ = signalGroup(p.cmd.Process, sigKill)
		<-p.done
	}
}

// Kill stops SeaweedFS with SIGKILL, as a crash would: nothing is flushed
// or deregistered. Start brings it back. Killing a stopped S3 does nothing.
func (s *S3) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

func (s *S3) killLocked() {
	p := s.proc
	if p == nil {
		return
	}
	s.proc = nil
	_ = signalGroup(p.cmd.Process, sigKill)
	<-p.done
}

// Start starts a stopped SeaweedFS again on the same ports and data dir
// and waits until it serves, reads and writes: about 15 s, because the
// master refuses to assign writes for 15 s (3 heartbeat pulses, fixed in
// SeaweedFS) after it restarts on existing volumes. Starting a running S3
// does nothing.
func (s *S3) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return
	}
	// A port may have been taken while it was down; retry a while.
	start := time.Now()
	deadline := start.Add(20 * time.Second)
	for {
		err := s.startLocked()
		if err == nil {
			break
		}
		if !errors.Is(err, errWeedPortTaken) || time.Now().After(deadline) {
			s.dumpLog()
			s.t.Fatalf("clustertest: restart SeaweedFS: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	s.t.Logf("clustertest: SeaweedFS S3 serving again in %v", time.Since(start).Round(time.Millisecond))
}

func (s *S3) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
	if s.t.Failed() {
		s.dumpLog()
	}
	os.RemoveAll(s.sockDir)
	// weed puts its gRPC unix sockets at fixed paths in /tmp and removes
	// them only on a clean exit.
	for _, c := range []struct {
		name string
		port int
	}{{"master", s.ports.masterGrpc}, {"volume", s.ports.volumeGrpc}, {"filer", s.ports.filerGrpc}, {"s3", s.ports.s3Grpc}} {
		os.Remove(fmt.Sprintf("/tmp/seaweedfs-%s-grpc-%d.sock", c.name, c.port))
	}
}

// dumpLog prints the tail of SeaweedFS's output.
func (s *S3) dumpLog() {
	if tail := fileTail(s.logPath, 32<<10); tail != "" {
		s.t.Logf("clustertest: SeaweedFS output (%s):\n%s", s.logPath, tail)
	}
}

// readFrom returns the file at path from offset off on, or "" if it cannot
// be read.
func readFrom(path string, off int64) string {
	b, err := os.ReadFile(path)
	if err != nil || off > int64(len(b)) {
		return ""
	}
	return string(b[off:])
}

var (
	weedOnce sync.Once
	weedPath string
	weedErr  error
)

// weedBinary returns the SeaweedFS binary: $ARBOR_SEAWEEDFS if set, else
// what .ci/seaweedfs.sh (which builds it once per machine) prints.
func weedBinary() (string, error) {
	weedOnce.Do(func() { weedPath, weedErr = findWeed() })
	return weedPath, weedErr
}

func findWeed() (string, error) {
	if p := os.Getenv("ARBOR_SEAWEEDFS"); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("ARBOR_SEAWEEDFS=%s: %w", p, err)
		}
		return p, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", fmt.Errorf("ARBOR_SEAWEEDFS is unset and .ci/seaweedfs.sh cannot be found: %w", err)
	}
	script := filepath.Join(root, ".ci", "seaweedfs.sh")
	cmd := exec.Command("bash", script)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ARBOR_SEAWEEDFS is unset and bash %s failed: %w\n%s", script, err, tailString(stderr.String(), 4<<10))
	}
	lines := strings.Fields(strings.TrimSpace(stdout.String()))
	if len(lines) == 0 {
		return "", fmt.Errorf("bash %s printed no path", script)
	}
	p := lines[len(lines)-1]
	if err := checkExecutable(p); err != nil {
		return "", fmt.Errorf("bash %s printed %s: %w", script, p, err)
	}
	return p, nil
}

func checkExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("not an executable file (mode %v)", st.Mode())
	}
	return nil
}

// moduleRoot walks up from the working directory (a test runs in its
// package's directory) to the directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for d := dir; ; {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod in %s or any parent", dir)
		}
		d = parent
	}
}

func tailString(s string, max int) string {
	if len(s) > max {
		return "..." + s[len(s)-max:]
	}
	return s
}
