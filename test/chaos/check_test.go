//go:build chaos

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

package chaos

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

func storedClaim(ns, name, uid, cidr string) ipamv1alpha1.IPClaim {
	return ipamv1alpha1.IPClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec:       ipamv1alpha1.IPClaimSpec{CIDR: cidr},
	}
}

// The kill-only run of seed 1206135 reported chaos-a/c-2br5n with "another
// uid than its client was told": the API server had generated that name
// twice, 34 minutes apart, the first claim deleted and released long
// before the second was created (27^5 names, ~3,700 claims a namespace: a
// reuse is expected about once a run). The older, deleted claim's record
// is not a claim of that name the client still holds.
func TestAGeneratedNameUsedAgainAfterItsDeleteIsNoProblem(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 13, 28, 4, 0, time.UTC)
	records := []record{
		{Kind: "IPClaim", Object: "chaos-a/c-2br5n", UID: "94695c67", Pool: "c4-a",
			CIDR: netip.MustParsePrefix("10.200.1.4/32"), Told: t0, End: t0.Add(2 * time.Second), How: "create"},
		{Kind: "IPClaim", Object: "chaos-a/c-2br5n", UID: "561e0b61", Pool: "c6-a-x",
			CIDR: netip.MustParsePrefix("fd00:c6:0:8:c426:d549:1cca:a000/120"), Told: t0.Add(34 * time.Minute), How: "create"},
	}
	claims := []ipamv1alpha1.IPClaim{storedClaim("chaos-a", "c-2br5n", "561e0b61", "fd00:c6:0:8:c426:d549:1cca:a000/120")}
	if got := clientProblemsIn(claims, nil, records); len(got) != 0 {
		t.Errorf("problems for a name generated again after its delete:\n%s", strings.Join(got, "\n"))
	}
}

// What the uid comparison is there for still shows: a claim a client holds
// that is gone, with another claim of its name in its place, and a deleted
// claim that lingers.
func TestClientProblemsStillFindsAReplacedOrLingeringClaim(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 13, 28, 4, 0, time.UTC)
	held := record{Kind: "IPClaim", Object: "chaos-a/c-held", UID: "u1",
		CIDR: netip.MustParsePrefix("10.200.1.4/32"), Told: t0, How: "create"}
	deleted := record{Kind: "IPClaim", Object: "chaos-a/c-gone", UID: "u3",
		CIDR: netip.MustParsePrefix("10.200.1.5/32"), Told: t0, End: t0.Add(time.Second), How: "create"}
	claims := []ipamv1alpha1.IPClaim{
		storedClaim("chaos-a", "c-held", "u2", "10.200.1.4/32"),
		storedClaim("chaos-a", "c-gone", "u3", "10.200.1.5/32"),
	}
	got := strings.Join(clientProblemsIn(claims, nil, []record{held, deleted}), "\n")
	for _, want := range []string{
		"claim chaos-a/c-held has uid u2, the client holds uid u1",
		"claim chaos-a/c-gone still exists, not being deleted, though its delete was accepted",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems do not say %q:\n%s", want, got)
		}
	}
}
