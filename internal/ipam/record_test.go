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

package ipam

import (
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/randfill"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

var _ client.Object = &ClaimRecord{}

// randomClaim is a claim with every field set at random, as the API
// server would send it (through JSON), with some of kipam's annotations
// among others.
func randomClaim(t *testing.T, seed int64) *ipamv1alpha1.IPClaim {
	t.Helper()
	var c ipamv1alpha1.IPClaim
	randfill.NewWithSeed(seed).NilChance(0.3).NumElements(0, 3).Fill(&c)
	c.ManagedFields = nil // random bytes, not JSON; and the record keeps none
	r := rand.New(rand.NewPCG(uint64(seed), 1))
	switch r.IntN(3) {
	case 0:
		c.UID = types.UID(uuid.NewString())
	case 1:
		c.UID = types.UID(uuid.Nil.String())
	}
	switch r.IntN(4) { // else randfill's own finalizers
	case 0:
		c.Finalizers = []string{ipamv1alpha1.ClaimFinalizer}
	case 1:
		c.Finalizers = []string{ipamv1alpha1.ClaimFinalizer, "example.com/other"}
	}
	if c.Annotations == nil && r.IntN(2) == 0 {
		c.Annotations = map[string]string{}
	}
	for _, k := range []string{PoolAnnotation, EntryAnnotation, SecondaryPoolAnnotation, FallbackAnnotation, kipamKeys + "other"} {
		if c.Annotations != nil && r.IntN(2) == 0 {
			c.Annotations[k] = k + "-value"
		}
	}
	switch r.IntN(4) {
	case 0:
		c.Status.CIDR = c.Spec.CIDR
	case 1:
		// As the claim controller writes a Ready claim's status: the
		// allocation's name and the Ready message derived (the record
		// keeps neither), the message maybe also on another condition.
		a := netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		if r.IntN(2) == 0 {
			a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(r.IntN(256))})
		}
		p := netip.PrefixFrom(a, r.IntN(a.BitLen()+1)).Masked()
		c.Spec.CIDR, c.Status.CIDR = p.String(), p.String()
		c.Status.Allocation = AllocationName(c.Status.Pool, p)
		c.Status.Conditions = append(c.Status.Conditions, metav1.Condition{Type: ipamv1alpha1.ConditionReady, Status: metav1.ConditionTrue,
			Reason: ipamv1alpha1.ReasonAllocated, Message: AllocatedMessage(p.String(), c.Status.Pool), ObservedGeneration: c.Generation})
		for i := range c.Status.Conditions {
			if r.IntN(3) == 0 {
				c.Status.Conditions[i].Message = AllocatedMessage(p.String(), c.Status.Pool)
			}
		}
	}
	data, err := json.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	var decoded ipamv1alpha1.IPClaim
	if err := json.Unmarshal(data, &decoded); err != nil {
		t.Fatal(err)
	}
	return &decoded
}

// kept is c less what a ClaimRecord leaves out.
func kept(c *ipamv1alpha1.IPClaim) *ipamv1alpha1.IPClaim {
	out := c.DeepCopy()
	out.TypeMeta = metav1.TypeMeta{}
	out.Labels, out.OwnerReferences, out.ManagedFields, out.GenerateName, out.SelfLink = nil, nil, nil, "", ""
	out.DeletionGracePeriodSeconds = nil
	out.Annotations = nil
	for k, v := range c.Annotations {
		if strings.HasPrefix(k, kipamKeys) {
			metav1.SetMetaDataAnnotation(&out.ObjectMeta, k, v)
		}
	}
	return out
}

// TestClaimRecordKeepsWhatKipamReads: a claim rebuilt from its record is
// the claim less what the record leaves out, every field of the spec and
// status included, for claims with every field set at random; and the
// record answers as the claim would.
func TestClaimRecordKeepsWhatKipamReads(t *testing.T) {
	for seed := range int64(3000) {
		c := randomClaim(t, seed)
		want := kept(c)
		r := RecordClaim(c.DeepCopy())
		got := r.Claim()
		if !equality.Semantic.DeepEqual(got, want) {
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(want)
			t.Fatalf("seed %d: the record rebuilds\n%s\nnot\n%s", seed, gj, wj)
		}
		if !equality.Semantic.DeepEqual(r.DeepCopyObject(), want) {
			t.Fatalf("seed %d: DeepCopyObject is not the claim rebuilt", seed)
		}
		if r.GetName() != want.Name || r.GetNamespace() != want.Namespace || r.GetUID() != want.UID ||
			r.GetResourceVersion() != want.ResourceVersion || r.GetGeneration() != want.Generation ||
			!r.GetCreationTimestamp().Time.Equal(want.CreationTimestamp.Time) || !r.GetDeletionTimestamp().Equal(want.DeletionTimestamp) ||
			!equality.Semantic.DeepEqual(r.GetFinalizers(), want.Finalizers) || !equality.Semantic.DeepEqual(r.GetAnnotations(), want.Annotations) {
			t.Fatalf("seed %d: the record's metadata differs from the claim's", seed)
		}
		if !equality.Semantic.DeepEqual(r.Holdings(), Holdings(want)) {
			t.Fatalf("seed %d: the record's holdings %v, the claim's %v", seed, r.Holdings(), Holdings(want))
		}
		for _, h := range append(Holdings(want), Holding{Pool: want.Spec.Pool, CIDR: want.Spec.CIDR}, Holding{Pool: "other", CIDR: "10.0.0.0/8"}) {
			got, ok := r.HoldingOf(h.Pool, h.CIDR)
			wantH, wantOK := HoldingOf(want, h.Pool, h.CIDR)
			if got != wantH || ok != wantOK {
				t.Fatalf("seed %d: the record's holding of %s in %s: %v %v, the claim's %v %v", seed, h.CIDR, h.Pool, got, ok, wantH, wantOK)
			}
		}
		if Waiting(r) != Waiting(want) {
			t.Fatalf("seed %d: the record waits: %v, the claim: %v", seed, Waiting(r), Waiting(want))
		}
		got.Spec.Pool, got.Finalizers = "changed", append(got.Finalizers, "changed")
		if !equality.Semantic.DeepEqual(r.Claim(), want) {
			t.Fatalf("seed %d: changing a rebuilt claim changed the record", seed)
		}
	}
}

// TestClaimRecordsShare: two claims' records share the strings claims
// repeat and a spec that is the same but for the cidr; a record shares
// its cidr between spec and status.
func TestClaimRecordsShare(t *testing.T) {
	claim := func(cidr string) *ipamv1alpha1.IPClaim {
		return &ipamv1alpha1.IPClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: strings.Clone("tenant"), UID: types.UID(uuid.NewString()),
				Annotations: map[string]string{PoolAnnotation: strings.Clone("pool-a"), EntryAnnotation: "e1"},
				Finalizers:  []string{strings.Clone(ipamv1alpha1.ClaimFinalizer)}},
			Spec: ipamv1alpha1.IPClaimSpec{Pool: strings.Clone("pool-a"), CIDR: cidr, PrefixLength: new(int32(32))},
			Status: ipamv1alpha1.IPClaimStatus{CIDR: strings.Clone(cidr), Pool: strings.Clone("pool-a"),
				Conditions: []metav1.Condition{{Type: strings.Clone(ipamv1alpha1.ConditionReady), Reason: strings.Clone(ipamv1alpha1.ReasonAllocated)}}},
		}
	}
	ca := claim("10.0.0.1/32")
	a, b := RecordClaim(ca), RecordClaim(claim("10.0.0.2/32"))
	if a.spec != b.spec {
		t.Errorf("two specs alike but for the cidr are two copies")
	}
	if a.shared != b.shared {
		t.Errorf("the namespace, pools and finalizers are held twice: the records' should be one")
	}
	if unsafe.SliceData(a.GetFinalizers()) != unsafe.SliceData(b.GetFinalizers()) {
		t.Errorf("the claims' finalizers are two lists: the records' should be one")
	}
	for _, s := range [][2]string{{a.namespace(), ca.Namespace}, {a.pool(), ca.Annotations[PoolAnnotation]},
		{a.statusPool(), ca.Status.Pool}, {a.spec.Pool, ca.Spec.Pool}} {
		if unsafe.StringData(s[0]) == unsafe.StringData(s[1]) {
			t.Errorf("%q is the decoded string, not a copy", s[0])
		}
	}
	if a.conditions[0].kind != b.conditions[0].kind {
		t.Errorf("the conditions' type, status and reason are held twice: the records' should be one")
	}
	if !a.sameCIDR || a.part(partStatusCIDR) != "" || unsafe.StringData(a.statusCIDR()) != unsafe.StringData(a.cidr()) {
		t.Errorf("status.cidr and spec.cidr are two copies")
	}
	if a.rare != nil {
		t.Errorf("a claim with nothing rare has rare fields: %+v", a.rare)
	}

	// What is the claim's own is copied into one allocation (pack), none
	// of it left in what the decoder allocated.
	c := claim("10.0.0.3/32")
	c.ResourceVersion, c.Status.Allocation, c.Status.Conditions[0].Message = "42", "pool-a.named-apart", "allocated"
	r := RecordClaim(c.DeepCopy())
	own := []string{r.GetName(), r.GetResourceVersion(), r.entry(), r.cidr(), r.allocation(), r.conditions[0].message}
	for i, s := range own {
		for _, decoded := range []string{c.Name, c.ResourceVersion, c.Annotations[EntryAnnotation], c.Spec.CIDR, c.Status.Allocation, c.Status.Conditions[0].Message} {
			if unsafe.StringData(s) == unsafe.StringData(decoded) {
				t.Errorf("%q is the decoded string, not a copy", s)
			}
		}
		if i > 0 && unsafe.Pointer(unsafe.StringData(s)) != unsafe.Add(unsafe.Pointer(unsafe.StringData(own[i-1])), len(own[i-1])) {
			t.Errorf("%q does not follow %q: not one allocation", s, own[i-1])
		}
	}
}

// TestClaimRecordDerives: the allocation's name and the Ready message,
// as the claim controller writes them, are worked out again, not kept.
func TestClaimRecordDerives(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.4/32")
	c := &ipamv1alpha1.IPClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "tenant"},
		Spec:       ipamv1alpha1.IPClaimSpec{Pool: "pool-a", CIDR: p.String()},
		Status: ipamv1alpha1.IPClaimStatus{CIDR: p.String(), Pool: "pool-a", Allocation: AllocationName("pool-a", p),
			Conditions: []metav1.Condition{{Type: ipamv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ipamv1alpha1.ReasonAllocated,
				Message: "10.0.0.4/32 allocated from pool pool-a"}}},
	}
	r := RecordClaim(c.DeepCopy())
	if r.part(partAllocation) != "" || !r.derived || r.conditions[0].message != "" || !r.conditions[0].allocated {
		t.Errorf("the record keeps the allocation's name %q (derived %t) and the message %q (derived %t)",
			r.part(partAllocation), r.derived, r.conditions[0].message, r.conditions[0].allocated)
	}
	if got := r.Claim(); !equality.Semantic.DeepEqual(got.Status, c.Status) {
		t.Errorf("rebuilt status %+v, want %+v", got.Status, c.Status)
	}
	// Anything else is kept as it is.
	c.Status.Allocation, c.Status.Conditions[0].Message = "pool-a.other", "10.0.0.4/32 allocated from pool pool-b"
	if r := RecordClaim(c.DeepCopy()); r.derived || r.conditions[0].allocated || !equality.Semantic.DeepEqual(r.Claim().Status, c.Status) {
		t.Errorf("a name and a message not derived: recorded %+v, rebuilt %+v", r, r.Claim().Status)
	}
}

// TestClaimRecordKeepsConditionsExactly: a condition's time is kept as
// decoded, fractions of a second and the epoch included (a client other
// than kipam may write them, and kipam writes a claim's conditions back
// whole), and an empty list stays empty.
func TestClaimRecordKeepsConditionsExactly(t *testing.T) {
	for _, raw := range []string{
		`{"metadata":{"name":"a","namespace":"n"},"status":{"conditions":[` +
			`{"type":"Ready","status":"True","reason":"Allocated","message":"m","lastTransitionTime":"2026-12-07T10:00:00.123456789Z"},` +
			`{"type":"Other","status":"False","reason":"R","message":"m","lastTransitionTime":"1970-01-01T00:00:00Z"},` +
			`{"type":"Third","status":"Unknown","reason":"R","message":""}]}}`,
		`{"metadata":{"name":"a","namespace":"n"},"status":{"conditions":[]}}`,
	} {
		var c ipamv1alpha1.IPClaim
		if err := json.Unmarshal([]byte(raw), &c); err != nil {
			t.Fatal(err)
		}
		got := RecordClaim(c.DeepCopy()).Claim().Status.Conditions
		if (got == nil) != (c.Status.Conditions == nil) || len(got) != len(c.Status.Conditions) {
			t.Fatalf("%s: rebuilt %#v", raw, got)
		}
		for i, want := range c.Status.Conditions {
			if !got[i].LastTransitionTime.Time.Equal(want.LastTransitionTime.Time) || got[i].LastTransitionTime.IsZero() != want.LastTransitionTime.IsZero() {
				t.Errorf("condition %s: time %v rebuilt as %v", want.Type, want.LastTransitionTime, got[i].LastTransitionTime)
			}
		}
	}
}

// TestSharedSpecsGo: a spec no record holds any more is dropped from the
// table records share specs through.
func TestSharedSpecsGo(t *testing.T) {
	held := func(marker string) bool {
		specs.Lock()
		defer specs.Unlock()
		for k := range specs.m {
			if strings.Contains(k, marker) {
				return true
			}
		}
		return false
	}
	// A stickyKey is each claim's own: such a spec is not shared.
	sticky := RecordClaim(&ipamv1alpha1.IPClaim{Spec: ipamv1alpha1.IPClaimSpec{Pool: "p", StickyKey: "TestSharedSpecsGo-sticky"}})
	if held("TestSharedSpecsGo-sticky") {
		t.Error("a spec with a stickyKey is in the table")
	}
	runtime.KeepAlive(sticky)
	const pool = "TestSharedSpecsGo"
	r := RecordClaim(&ipamv1alpha1.IPClaim{Spec: ipamv1alpha1.IPClaimSpec{Pool: pool}})
	if !held(pool) {
		t.Fatal("the spec is not in the table")
	}
	runtime.KeepAlive(r)
	r = nil
	for range 100 {
		runtime.GC()
		if !held(pool) {
			return
		}
		runtime.Gosched()
	}
	t.Error("the spec of a record gone is still in the table after 100 collections")
}

// FuzzClaimRecord is TestClaimRecordKeepsWhatKipamReads's check for any
// seed: go test ./internal/ipam -run '^$' -fuzz FuzzClaimRecord.
func FuzzClaimRecord(f *testing.F) {
	f.Add(int64(1))
	f.Fuzz(func(t *testing.T, seed int64) {
		c := randomClaim(t, seed)
		if got, want := RecordClaim(c.DeepCopy()).Claim(), kept(c); !equality.Semantic.DeepEqual(got, want) {
			t.Fatalf("seed %d: the record rebuilds %+v, not %+v", seed, got, want)
		}
	})
}

// BenchmarkClaimRecord is what the cache pays for each claim event
// (RecordClaim, from the decoded claim) and each read (Claim, a rebuild),
// against the deep copy a read cost while the cache kept the claim:
//
//	go test ./internal/ipam -run '^$' -bench ClaimRecord -benchmem
func BenchmarkClaimRecord(b *testing.B) {
	c := &ipamv1alpha1.IPClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "scale-569450-pre-1234", Namespace: "default", UID: types.UID(uuid.NewString()),
			ResourceVersion: "1234567", Generation: 1, CreationTimestamp: metav1.Now(),
			Annotations: map[string]string{EntryAnnotation: "3gaa2tqf2ai4v", PoolAnnotation: "scale-569450-0"},
			Finalizers:  []string{ipamv1alpha1.ClaimFinalizer}},
		Spec: ipamv1alpha1.IPClaimSpec{Pool: "scale-569450-0", CIDR: "10.20.4.210/32", WhenExhausted: ipamv1alpha1.ExhaustedPolicy("Deny")},
		Status: ipamv1alpha1.IPClaimStatus{CIDR: "10.20.4.210/32", Pool: "scale-569450-0", Allocation: "scale-569450-0.10-20-4-210-32",
			Conditions: []metav1.Condition{{Type: ipamv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ipamv1alpha1.ReasonAllocated,
				Message: "10.20.4.210/32 allocated from pool scale-569450-0", ObservedGeneration: 1, LastTransitionTime: metav1.Now()}}},
	}
	b.Run("RecordClaim", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			RecordClaim(c.DeepCopy())
		}
	})
	r := RecordClaim(c.DeepCopy())
	b.Run("Claim", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Claim()
		}
	})
	b.Run("Holdings", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Holdings()
		}
	})
	b.Run("HoldingOf/another", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.HoldingOf("scale-569450-0", "10.20.4.211/32")
		}
	})
	b.Run("DeepCopy", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.DeepCopy()
		}
	})
}
