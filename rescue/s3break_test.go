package rescue

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rewind-bmr/rewind/snapshot"
)

// presignTable prints urls exactly as rewind s3 presign does.
func presignTable(urls map[string]string) string {
	var b strings.Builder
	b.WriteString("# pre-signed GET URLs made by rewind s3 presign\n[s3.presigned]\n")
	for _, k := range slices.Sorted(maps.Keys(urls)) {
		fmt.Fprintf(&b, "%s = %s\n", strconv.Quote(k), strconv.Quote(urls[k]))
	}
	return b.String()
}

// TestBreakPresignUpperCaseKey: ParseS3Location accepts upper-case
// letters in the key (s3://lab/Room1/PC1), capture and restore use such
// locations, and rewind s3 presign prints their URLs keyed by
// location; but ParsePlan refuses every plan key with an upper-case
// letter, and the [s3.presigned] map's keys are plan keys.
func TestBreakPresignUpperCaseKey(t *testing.T) {
	const loc = "s3://lab/Room1/PC1"
	if _, err := snapshot.ParseS3Location(loc); err != nil {
		t.Fatalf("location: %v", err)
	}
	o := snapshot.S3Options{Endpoint: "http://10.0.2.100:7070", Credential: &snapshot.S3Credential{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}}
	urls, err := snapshot.PresignS3(loc, o, []string{"manifest.json", "data.000"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	plan := "[s3]\nendpoint = \"http://10.0.2.100:7070\"\n" + presignTable(urls) +
		"[[machine]]\nname = \"srv1\"\n[[machine.disk]]\nsnapshot = \"" + loc + "\"\ntarget = \"serial=A\"\n"
	if _, err := ParsePlan([]byte(plan)); err != nil {
		t.Errorf("the plan with rewind s3 presign's table for %s is refused: %v", loc, err)
	}
}

// TestBreakPresignTwoTables: presign run once per snapshot (as the help
// suggests making new URLs per run) and pasted twice gives two
// [s3.presigned] headers: not valid TOML.
func TestBreakPresignTwoTables(t *testing.T) {
	o := snapshot.S3Options{Endpoint: "http://10.0.2.100:7070", Credential: &snapshot.S3Credential{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}}
	a, _ := snapshot.PresignS3("s3://lab/room/a", o, []string{"manifest.json"}, time.Hour)
	b, _ := snapshot.PresignS3("s3://lab/room/b", o, []string{"manifest.json"}, time.Hour)
	plan := presignTable(a) + presignTable(b) + "[[machine]]\nname = \"srv1\"\n[[machine.disk]]\nsnapshot = \"s3://lab/room/a\"\ntarget = \"serial=A\"\n"
	_, err := ParsePlan([]byte(plan))
	t.Logf("two pasted tables: %v", err)
	if err != nil && strings.Contains(err.Error(), "X-Amz-Signature") {
		t.Errorf("the parse error shows a signature: %v", err)
	}
}
