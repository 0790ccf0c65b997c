package packstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 keeps packs in an S3-compatible bucket.
type S3 struct {
	c      *minio.Client
	bucket string
	prefix string // "" or ending in "/"
	url    string
	cache  *Cache
}

var _ Store = (*S3)(nil)

// Environment variables read when a flag is not given.
const (
	EnvAccessKey = "AWS_ACCESS_KEY_ID"
	EnvSecretKey = "AWS_SECRET_ACCESS_KEY"
	EnvEndpoint  = "AWS_ENDPOINT_URL"
	EnvEndpoint2 = "REWIND_S3_ENDPOINT"
	EnvRegion    = "AWS_REGION"
)

// FillFromEnv completes opt from the environment where it is empty.
func (opt *Options) FillFromEnv() {
	if opt.AccessKey == "" {
		opt.AccessKey = os.Getenv(EnvAccessKey)
	}
	if opt.SecretKey == "" {
		opt.SecretKey = os.Getenv(EnvSecretKey)
	}
	if opt.Endpoint == "" {
		opt.Endpoint = os.Getenv(EnvEndpoint2)
	}
	if opt.Endpoint == "" {
		opt.Endpoint = os.Getenv(EnvEndpoint)
	}
	if opt.Region == "" {
		opt.Region = os.Getenv(EnvRegion)
	}
}

// NewS3 connects to the bucket of opt.URL, creating the bucket when it is
// missing.
func NewS3(ctx context.Context, opt Options) (*S3, error) {
	bucket, prefix, err := ParseURL(opt.URL)
	if err != nil {
		return nil, err
	}
	if prefix != "" {
		prefix += "/"
	}
	endpoint := opt.Endpoint
	secure := !opt.Insecure
	// An endpoint given as a URL says http or https itself.
	if u, ok := strings.CutPrefix(endpoint, "http://"); ok {
		endpoint, secure = u, false
	} else if u, ok := strings.CutPrefix(endpoint, "https://"); ok {
		endpoint = u
	}
	endpoint = strings.TrimSuffix(endpoint, "/")
	if endpoint == "" {
		return nil, fmt.Errorf("pack store %s: no S3 endpoint (--s3-endpoint, $%s or $%s)", opt.URL, EnvEndpoint2, EnvEndpoint)
	}
	if opt.AccessKey == "" || opt.SecretKey == "" {
		return nil, fmt.Errorf("pack store %s: no S3 credentials (--s3-access-key/--s3-secret-key or $%s/$%s)", opt.URL, EnvAccessKey, EnvSecretKey)
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, err
	}
	tr.MaxIdleConnsPerHost = 64
	c, err := minio.New(endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(opt.AccessKey, opt.SecretKey, ""),
		Secure:    secure,
		Region:    opt.Region,
		Transport: tr,
	})
	if err != nil {
		return nil, fmt.Errorf("pack store %s: %w", opt.URL, err)
	}
	ok, err := c.BucketExists(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("pack store %s at %s: %w", opt.URL, endpoint, err)
	}
	if !ok {
		if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: opt.Region}); err != nil {
			return nil, fmt.Errorf("pack store %s: create bucket: %w", opt.URL, err)
		}
	}
	size := opt.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	return &S3{c: c, bucket: bucket, prefix: prefix, url: opt.URL, cache: NewCache(max(size, 0))}, nil
}

func (s *S3) key(name string) string { return s.prefix + name }

// Upload puts the file with a Content-MD5 the server checks, then compares
// the size the server reports.
func (s *S3) Upload(ctx context.Context, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("upload pack %s: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("upload pack %s: %w", name, err)
	}
	info, err := s.c.PutObject(ctx, s.bucket, s.key(name), f, st.Size(), minio.PutObjectOptions{
		ContentType:    "application/octet-stream",
		SendContentMd5: true,
		PartSize:       64 << 20,
	})
	if err != nil {
		return fmt.Errorf("upload pack %s to %s: %w", name, s.url, err)
	}
	if info.Size != st.Size() {
		return fmt.Errorf("upload pack %s to %s: stored %d bytes of %d", name, s.url, info.Size, st.Size())
	}
	s.cache.Forget(name) // a re-upload (recovery) may change the object
	return nil
}

// Open stats the object; reads are ranged GETs through the cache.
func (s *S3) Open(ctx context.Context, name string) (io.ReaderAt, int64, error) {
	info, err := s.c.StatObject(ctx, s.bucket, s.key(name), minio.StatObjectOptions{})
	if err != nil {
		return nil, 0, fmt.Errorf("open pack %s in %s: %w", name, s.url, notExist(err))
	}
	return &object{s: s, name: name, size: info.Size}, info.Size, nil
}

// Delete removes the object and its cached segments.
func (s *S3) Delete(ctx context.Context, name string) error {
	s.cache.Forget(name)
	if err := s.c.RemoveObject(ctx, s.bucket, s.key(name), minio.RemoveObjectOptions{}); err != nil && !errors.Is(notExist(err), fs.ErrNotExist) {
		return fmt.Errorf("delete pack %s from %s: %w", name, s.url, err)
	}
	return nil
}

// List lists the objects under prefix/packs/.
func (s *S3) List(ctx context.Context, fn func(string, int64)) error {
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + "packs/", Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("list packs in %s: %w", s.url, o.Err)
		}
		if strings.HasSuffix(o.Key, ".pack") {
			fn(strings.TrimPrefix(o.Key, s.prefix), o.Size)
		}
	}
	return ctx.Err()
}

// Local is false.
func (*S3) Local() bool { return false }

func (s *S3) String() string { return s.url }

// Cache returns the store's read cache.
func (s *S3) Cache() *Cache { return s.cache }

// notExist makes a missing object or bucket an fs.ErrNotExist.
func notExist(err error) error {
	switch minio.ToErrorResponse(err).Code {
	case "NoSuchKey", "NoSuchBucket", "NotFound":
		return fmt.Errorf("%w (%v)", fs.ErrNotExist, err)
	}
	if minio.ToErrorResponse(err).StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w (%v)", fs.ErrNotExist, err)
	}
	return err
}

// readAhead is how many segments after a missed one are fetched with it.
const readAhead = 2

// object reads one pack object.
type object struct {
	s    *S3
	name string
	size int64
}

// ReadAt reads through the segment cache.
func (o *object) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read pack %s: negative offset", o.name)
	}
	n := 0
	for n < len(p) {
		at := off + int64(n)
		if at >= o.size {
			return n, io.EOF
		}
		seg := at / SegmentSize
		// Packs are read mostly in order (restores, exports, check,
		// compaction): the following segments are fetched ahead.
		for next := seg + 1; next <= seg+readAhead && next*SegmentSize < o.size; next++ {
			o.s.cache.prefetch(o.name, next, func() ([]byte, error) { return o.fetch(next) })
		}
		b, err := o.s.cache.get(o.name, seg, func() ([]byte, error) { return o.fetch(seg) })
		if err != nil {
			return n, err
		}
		n += copy(p[n:], b[at-seg*SegmentSize:])
	}
	return n, nil
}

// fetch GETs one segment, retrying transient failures.
func (o *object) fetch(seg int64) ([]byte, error) {
	start := seg * SegmentSize
	end := min(start+SegmentSize, o.size)
	buf := make([]byte, end-start)
	var err error
	for try := range 3 {
		if try > 0 {
			time.Sleep(time.Duration(try) * 200 * time.Millisecond)
		}
		if err = o.get(buf, start); err == nil || errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("read pack %s from %s at offset %d: %w", o.name, o.s.url, start, err)
	}
	return buf, nil
}

func (o *object) get(buf []byte, start int64) error {
	var opt minio.GetObjectOptions
	if err := opt.SetRange(start, start+int64(len(buf))-1); err != nil {
		return err
	}
	r, err := o.s.c.GetObject(context.Background(), o.s.bucket, o.s.key(o.name), opt)
	if err != nil {
		return notExist(err)
	}
	defer r.Close()
	if _, err := io.ReadFull(r, buf); err != nil {
		return notExist(err)
	}
	return nil
}
