package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// objects is the cluster's bucket: packs are written once and read by
// ranges; nothing in it is ever modified.
type objects struct {
	c      *minio.Client
	bucket string
	url    string
}

// packPrefix is where packs live in the bucket.
const packPrefix = "packs/"

func packName(id uint64) string { return fmt.Sprintf("%s%016x.pack", packPrefix, id) }

func openObjects(ctx context.Context, o Options) (*objects, error) {
	u, err := url.Parse(o.S3)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("cluster: S3 endpoint %q: want http://host:port or https://host:port", o.S3)
	}
	creds := credentials.NewEnvAWS()
	if o.AccessKey != "" {
		creds = credentials.NewStaticV4(o.AccessKey, o.SecretKey, "")
	}
	region := o.Region
	if region == "" {
		region = os.Getenv("AWS_REGION")
	}
	if region == "" {
		region = os.Getenv("AWS_DEFAULT_REGION")
	}
	if region == "" {
		region = "us-east-1"
	}
	c, err := minio.New(u.Host, &minio.Options{Creds: creds, Secure: u.Scheme == "https", Region: region, BucketLookup: minio.BucketLookupPath})
	if err != nil {
		return nil, fmt.Errorf("cluster: S3 client for %s: %w", o.S3, err)
	}
	obj := &objects{c: c, bucket: o.Bucket, url: o.S3}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ok, err := c.BucketExists(ctx, o.Bucket)
	if err != nil {
		return nil, fmt.Errorf("cluster: S3 %s: bucket %q: %w", o.S3, o.Bucket, err)
	}
	if !ok {
		return nil, fmt.Errorf("cluster: S3 %s: bucket %q does not exist", o.S3, o.Bucket)
	}
	return obj, nil
}

func (o *objects) put(ctx context.Context, name string, b []byte) error {
	_, err := o.c.PutObject(ctx, o.bucket, name, bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: len(b) < 256<<20})
	if err != nil {
		return fmt.Errorf("S3 %s: put %s/%s (%d bytes): %w", o.url, o.bucket, name, len(b), err)
	}
	return nil
}

// getRange reads n bytes of object name from off.
func (o *objects) getRange(ctx context.Context, name string, off, n uint64) ([]byte, error) {
	var opts minio.GetObjectOptions
	if n == 0 {
		return nil, nil
	}
	if err := opts.SetRange(int64(off), int64(off+n-1)); err != nil {
		return nil, err
	}
	r, err := o.c.GetObject(ctx, o.bucket, name, opts)
	if err != nil {
		return nil, fmt.Errorf("S3 %s: get %s/%s [%d+%d]: %w", o.url, o.bucket, name, off, n, err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, int64(n)+1))
	if err != nil {
		return nil, fmt.Errorf("S3 %s: get %s/%s [%d+%d]: %w", o.url, o.bucket, name, off, n, err)
	}
	if uint64(len(b)) != n {
		return nil, fmt.Errorf("S3 %s: get %s/%s [%d+%d]: %w: got %d bytes", o.url, o.bucket, name, off, n, ErrCorruptPack, len(b))
	}
	return b, nil
}

func (o *objects) remove(ctx context.Context, name string) error {
	if err := o.c.RemoveObject(ctx, o.bucket, name, minio.RemoveObjectOptions{}); err != nil {
		var er minio.ErrorResponse
		if errors.As(err, &er) && er.Code == "NoSuchKey" {
			return nil
		}
		return fmt.Errorf("S3 %s: delete %s/%s: %w", o.url, o.bucket, name, err)
	}
	return nil
}

type objectInfo struct {
	name     string
	size     int64
	modified time.Time
}

func (o *objects) list(ctx context.Context, prefix string) ([]objectInfo, error) {
	var out []objectInfo
	for oi := range o.c.ListObjects(ctx, o.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if oi.Err != nil {
			return nil, fmt.Errorf("S3 %s: list %s/%s: %w", o.url, o.bucket, prefix, oi.Err)
		}
		out = append(out, objectInfo{oi.Key, oi.Size, oi.LastModified})
	}
	return out, nil
}
