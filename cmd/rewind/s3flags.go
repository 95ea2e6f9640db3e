package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/rewind-bmr/rewind/snapshot"
)

// s3Flags are the global flags for s3:// locations.
type s3Flags struct {
	endpoint, region, profile, pathStyle string
}

func (f *s3Flags) register(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.StringVar(&f.endpoint, "s3-endpoint", "", "s3://: the object store's URL, http(s)://HOST[:PORT] (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS)")
	pf.StringVar(&f.region, "s3-region", "", "s3://: the bucket's region (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)")
	pf.StringVar(&f.profile, "s3-profile", "", "s3://: the profile of the shared credentials file to use (default: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else AWS_PROFILE or default in AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials)")
	pf.StringVar(&f.pathStyle, "s3-path-style", "auto", "s3://: put the bucket in the path (on), in the host name (off), or auto (path style with --s3-endpoint, as most stores other than AWS want)")
}

// options resolves the flags and the AWS environment.
func (f *s3Flags) options(warn func(string, ...any)) (snapshot.S3Options, error) {
	o, err := snapshot.S3OptionsFromEnv(os.Getenv, f.endpoint, f.region, f.profile)
	if err != nil {
		return o, err
	}
	switch f.pathStyle {
	case "auto":
	case "on", "off":
		v := f.pathStyle == "on"
		o.PathStyle = &v
	default:
		return o, usageError{fmt.Errorf("--s3-path-style %q: want auto, on or off", f.pathStyle)}
	}
	if w := o.PlainHTTPWarning(); w != "" && warn != nil {
		warn(w)
	}
	return o, nil
}
