package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/repository/packstore"
)

// s3Flags holds the --s3-* flags every command shares: how to reach a
// repository's S3 pack store (its location is recorded in the repository).
type s3Flags struct {
	opt       packstore.Options
	cacheSize string
}

var s3 s3Flags

// addS3Flags adds the --s3-* flags to root, for every command.
func addS3Flags(root *cobra.Command) {
	s3 = s3Flags{}
	f := root.PersistentFlags()
	f.StringVar(&s3.opt.Endpoint, "s3-endpoint", "", "S3 endpoint host:port or URL of the pack store (default: the one recorded in the repository, $REWIND_S3_ENDPOINT, $AWS_ENDPOINT_URL)")
	f.StringVar(&s3.opt.Region, "s3-region", "", "S3 region (default: recorded, or $AWS_REGION)")
	f.StringVar(&s3.opt.AccessKey, "s3-access-key", "", "S3 access key (default $AWS_ACCESS_KEY_ID; never stored)")
	f.StringVar(&s3.opt.SecretKey, "s3-secret-key", "", "S3 secret key (default $AWS_SECRET_ACCESS_KEY; never stored)")
	f.BoolVar(&s3.opt.Insecure, "s3-insecure", false, "talk plain http to the S3 endpoint")
	f.StringVar(&s3.cacheSize, "s3-cache-size", "256MiB", "memory for hot pack segments read from S3")
}

// addPacksFlag adds --packs to a command that opens a repository for
// writing.
func addPacksFlag(c *cobra.Command, url *string) {
	c.Flags().StringVar(url, "packs", "", "keep sealed packs in S3-compatible storage, s3://bucket/prefix (recorded in the repository; see --s3-* flags)")
}

// repoOptions are the options to open a repository with: the --s3-* flags
// and, when set, a pack store URL to record.
func repoOptions(packsURL string) (repository.OpenOptions, error) {
	opt := s3.opt
	if packsURL != "" {
		if !strings.HasPrefix(packsURL, "s3://") {
			return repository.OpenOptions{}, usagef("--packs %q: want s3://bucket/prefix", packsURL)
		}
		if _, _, err := packstore.ParseURL(packsURL); err != nil {
			return repository.OpenOptions{}, usagef("--packs: %v", err)
		}
		opt.URL = packsURL
	}
	if s3.cacheSize != "" {
		n, err := parseSize(s3.cacheSize)
		if err != nil {
			return repository.OpenOptions{}, usagef("--s3-cache-size: %v", err)
		}
		opt.CacheSize = n
		if n == 0 {
			opt.CacheSize = -1 // no cache
		}
	}
	return repository.OpenOptions{Packs: opt}, nil
}

// openRepoWriting opens (creating when absent) a repository for a command
// that writes to it, recording packsURL as its pack store when set.
func openRepoWriting(ctx context.Context, dir, packsURL string) (*repository.Repo, error) {
	opt, err := repoOptions(packsURL)
	if err != nil {
		return nil, err
	}
	return repository.OpenOrInitWith(ctx, dir, opt)
}
