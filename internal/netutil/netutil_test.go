/*
Copyright 2026 The kipam Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package netutil

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParsePrefixSaysWhatToWrite(t *testing.T) {
	for in, want := range map[string]string{
		"::ffff:10.0.0.0/104": "is an IPv4-mapped IPv6 prefix, which kipam does not serve: write the IPv4 prefix 10.0.0.0/8",
		"::ffff:a00:0/104":    "write the IPv4 prefix 10.0.0.0/8",
		"::ffff:0:0/64":       "IPv4-mapped IPv6 address with a prefix shorter than /96",
		"10.0.0.1/24":         "is not canonical: write 10.0.0.0/24",
	} {
		_, err := ParsePrefix(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePrefix(%q) = %v, want it to say %q", in, err, want)
		}
	}
	if p, err := ParsePrefix("2001:db8::/48"); err != nil || p.String() != "2001:db8::/48" {
		t.Errorf("ParsePrefix(2001:db8::/48) = %v, %v", p, err)
	}
}

func TestStep(t *testing.T) {
	for _, tc := range []struct {
		from   string
		n      uint64
		toward string
		want   string
	}{
		{"10.0.0.0", 3, "10.0.0.255", "10.0.0.3"},
		{"10.0.0.255", 3, "10.0.0.0", "10.0.0.252"},
		{"10.0.0.0", 300, "10.0.0.255", "10.0.0.255"}, // stops at toward
		{"10.0.0.255", 1 << 40, "10.0.0.0", "10.0.0.0"},
		{"10.0.255.255", 1, "10.1.255.255", "10.1.0.0"},                            // carries
		{"2001:db8::ffff:ffff:ffff:ffff", 1, "2001:db8:0:1::ff", "2001:db8:0:1::"}, // carries
		{"2001:db8::", 0, "2001:db8::ff", "2001:db8::"},
		{"10.0.0.255", 0, "10.0.0.0", "10.0.0.255"}, // no step, downwards
		{"2001:db8::ff", 0, "2001:db8::", "2001:db8::ff"},
		{"2001:db8::ff", 2, "2001:db8::", "2001:db8::fd"},
	} {
		got := Step(netip.MustParseAddr(tc.from), tc.n, netip.MustParseAddr(tc.toward))
		if got != netip.MustParseAddr(tc.want) {
			t.Errorf("Step(%s, %d, %s) = %s, want %s", tc.from, tc.n, tc.toward, got, tc.want)
		}
	}
}
