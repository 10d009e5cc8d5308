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

package controller

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/json"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// fullClaim is a claim with everything kipam does not read set: another
// controller's labels, annotations, owner and finalizer, kubectl's copy
// of the whole object, managedFields.
func fullClaim() *ipamv1alpha1.IPClaim {
	return &ipamv1alpha1.IPClaim{
		TypeMeta: metav1.TypeMeta{APIVersion: ipamv1alpha1.GroupVersion.String(), Kind: "IPClaim"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", GenerateName: "we", Namespace: strings.Clone("tenant"), UID: "uid-1",
			Labels: map[string]string{"example.com/team": "a"},
			Annotations: map[string]string{ipam.EntryAnnotation: "e1", ipam.PoolAnnotation: strings.Clone("pool-a"),
				corev1.LastAppliedConfigAnnotation: `{"spec":{"pool":"pool-a"}}`, "example.com/note": "x"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "o", UID: "uid-o"}},
			Finalizers:      []string{"example.com/hold", strings.Clone(ipamv1alpha1.ClaimFinalizer)},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		},
		Spec: ipamv1alpha1.IPClaimSpec{Pool: strings.Clone("pool-a"), CIDR: "10.0.0.1/32"},
		Status: ipamv1alpha1.IPClaimStatus{CIDR: strings.Clone("10.0.0.1/32"), Pool: "pool-a", Allocation: "pool-a.10-0-0-1-32",
			Conditions: []metav1.Condition{{Type: ipamv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ipamv1alpha1.ReasonAllocated},
				{Type: "example.com/Checked", Status: metav1.ConditionTrue, Reason: "Checked"}}},
	}
}

// TestRecordedClaimIsWhatKipamReads: the cache's transform records a
// claim, and a read rebuilds it without what kipam does not read
// (ipam.TestClaimRecordKeepsWhatKipamReads checks every field).
func TestRecordedClaimIsWhatKipamReads(t *testing.T) {
	o, err := recordClaim(fullClaim())
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := recordClaim(o); again != o {
		t.Errorf("a record given to the transform again is changed")
	}
	c := cachedClaim(o)
	if c.Labels != nil || c.OwnerReferences != nil || c.ManagedFields != nil || c.GenerateName != "" {
		t.Errorf("labels, owners, generateName and managedFields are kept: %+v", c.ObjectMeta)
	}
	want := map[string]string{ipam.EntryAnnotation: "e1", ipam.PoolAnnotation: "pool-a"}
	if len(c.Annotations) != len(want) || c.Annotations[ipam.EntryAnnotation] != "e1" || c.Annotations[ipam.PoolAnnotation] != "pool-a" {
		t.Errorf("annotations %v, want kipam's alone: %v", c.Annotations, want)
	}
	if len(c.Finalizers) != 2 || len(c.Status.Conditions) != 2 {
		t.Errorf("finalizers %v and conditions %v are lists kipam writes whole: they must be kept whole", c.Finalizers, c.Status.Conditions)
	}
	if ipam.PoolOf(c) != "pool-a" || len(ipam.Holdings(c)) != 1 || c.Status.Allocation == "" {
		t.Errorf("what kipam reads is gone: %+v", c)
	}
	if h := recordedHoldings(o); len(h) != 1 || h[0] != ipam.Holdings(c)[0] {
		t.Errorf("the record's holdings %v, the claim's %v", h, ipam.Holdings(c))
	}
}

// TestRecordedClaimPatches shows why recording a claim is safe: kipam
// writes a claim by merge patches between two copies of the claim a cache
// read rebuilds, and a field the record left out is in neither, so no
// patch names it.
func TestRecordedClaimPatches(t *testing.T) {
	for name, write := range map[string]func(*ipamv1alpha1.IPClaim){
		"status": func(c *ipamv1alpha1.IPClaim) {
			meta.SetStatusCondition(&c.Status.Conditions, metav1.Condition{Type: ipamv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: "Pending"})
			c.Status.CIDR, c.Status.Pool = "", ""
		},
		"release": func(c *ipamv1alpha1.IPClaim) { controllerutil.RemoveFinalizer(c, ipamv1alpha1.ClaimFinalizer) },
		"adopt": func(c *ipamv1alpha1.IPClaim) {
			metav1.SetMetaDataAnnotation(&c.ObjectMeta, ipam.PoolAnnotation, "pool-b")
		},
	} {
		o, _ := recordClaim(fullClaim())
		c := cachedClaim(o)
		patch := client.MergeFrom(c.DeepCopy())
		write(c)
		data, err := patch.Data(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, dropped := range []string{"labels", "ownerReferences", "managedFields", "generateName", "example.com/note", "last-applied"} {
			if strings.Contains(string(data), dropped) {
				t.Errorf("%s: the patch %s names %s, which the cache dropped", name, data, dropped)
			}
		}
		if name == "release" && !strings.Contains(string(data), "example.com/hold") {
			t.Errorf("the release's patch %s drops another controller's finalizer", data)
		}
		if name == "status" && !strings.Contains(string(data), "example.com/Checked") {
			t.Errorf("the status patch %s drops another controller's condition", data)
		}
	}
}

// The JSON of a claim and its allocation as hack/load's scale scenario
// creates them and kipam completes them, numbered.
const (
	loadClaim = `{"apiVersion":"ipam.kipam.dev/v1alpha1","kind":"IPClaim","metadata":{"annotations":{"ipam.kipam.dev/entry":"3gaa2tqf2ai4v",` +
		`"ipam.kipam.dev/pool":"scale-569450-0"},"creationTimestamp":"2026-12-06T15:04:05Z","finalizers":["ipam.kipam.dev/release"],` +
		`"generation":1,"labels":{"kipam.dev/load":"scale-569450-pre"},"name":"scale-569450-pre-%[1]d","namespace":"default",` +
		`"resourceVersion":"1%[1]d","uid":"9e7b31b8-d50c-41bc-b5dd-c2742%07[1]d"},"spec":{"cidr":"10.20.%[2]d.%[3]d/32",` +
		`"pool":"scale-569450-0","whenExhausted":"Deny"},"status":{"allocation":"scale-569450-0.10-20-%[2]d-%[3]d-32",` +
		`"cidr":"10.20.%[2]d.%[3]d/32","conditions":[{"lastTransitionTime":"2026-12-06T15:04:05Z",` +
		`"message":"10.20.%[2]d.%[3]d/32 allocated from pool scale-569450-0","observedGeneration":1,"reason":"Allocated",` +
		`"status":"True","type":"Ready"}],"pool":"scale-569450-0"}}`
	loadAllocation = `{"apiVersion":"ipam.kipam.dev/v1alpha1","kind":"IPAllocation","metadata":{"creationTimestamp":"2026-12-06T15:04:05Z",` +
		`"finalizers":["ipam.kipam.dev/holder"],"generation":1,"labels":{"ipam.kipam.dev/claim-namespace":"default",` +
		`"ipam.kipam.dev/pool":"scale-569450-0"},"name":"scale-569450-0.10-20-%[2]d-%[3]d-32","resourceVersion":"1%[1]d",` +
		`"uid":"8e7b31b8-d50c-41bc-b5dd-c2742%07[1]d"},"spec":{"cidr":"10.20.%[2]d.%[3]d/32","claimRef":{"kind":"IPClaim",` +
		`"name":"scale-569450-pre-%[1]d","namespace":"default","uid":"9e7b31b8-d50c-41bc-b5dd-c2742%07[1]d"},` +
		`"entry":"3gaa2tqf2ai4v","pool":"scale-569450-0"}}`
)

// heapPerObject decodes n objects from the numbered JSON doc into new(T),
// passes each through trim (the cache's transform) when it is set, and
// returns the heap they hold per object.
func heapPerObject[T any](t *testing.T, n int, doc string, trim func(any) (any, error)) uint64 {
	t.Helper()
	keep := make([]any, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		var o any = new(T)
		if err := json.Unmarshal(fmt.Appendf(nil, doc, i, i/256%256, i%256), o); err != nil {
			t.Fatal(err)
		}
		if trim != nil {
			o, _ = trim(o)
		}
		keep[i] = o
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(keep)
	return (after.HeapAlloc - before.HeapAlloc) / uint64(n)
}

// TestCachedObjectCost reports what the cache holds for one claim, decoded
// as the informers decode it, with and without kipam's transform, and what
// allocations keeps of an allocation against the whole object
// (docs/design.md, "Memory per claim"):
//
//	go test ./internal/controller -run TestCachedObjectCost -v
func TestCachedObjectCost(t *testing.T) {
	const n = 10000
	for _, c := range []struct {
		what          string
		full, trimmed uint64
	}{
		{"IPClaim (its record, ipam.ClaimRecord)", heapPerObject[ipamv1alpha1.IPClaim](t, n, loadClaim, nil), heapPerObject[ipamv1alpha1.IPClaim](t, n, loadClaim, recordClaim)},
		{"IPAllocation (its record, allocations)", heapPerObject[ipamv1alpha1.IPAllocation](t, n, loadAllocation, nil),
			heapPerObject[ipamv1alpha1.IPAllocation](t, n, loadAllocation, func(o any) (any, error) {
				a := o.(*ipamv1alpha1.IPAllocation)
				return &struct {
					name string
					rec  allocRecord
				}{a.Name, recordOf(a)}, nil
			})},
		{"IPAllocation as metadata only (for comparison)", heapPerObject[metav1.PartialObjectMetadata](t, n, loadAllocation, nil), 0},
	} {
		if c.trimmed == 0 {
			t.Logf("%s: %d B", c.what, c.full)
			continue
		}
		t.Logf("%s: %d B decoded, %d B recorded", c.what, c.full, c.trimmed)
		if c.trimmed >= c.full {
			t.Errorf("%s: recorded it costs %d B, no less than the %d B of the whole object", c.what, c.trimmed, c.full)
		}
	}
}

// TestClaimsAreNotIndexedByNamespace: the claims' informer has no index by
// namespace, which nothing reads (newInformer), so a list of one
// namespace's claims from the cache fails loudly rather than answering
// nothing; every other kind keeps it. It reports what the index cost:
//
//	go test ./internal/controller -run TestClaimsAreNotIndexedByNamespace -v
func TestClaimsAreNotIndexedByNamespace(t *testing.T) {
	byNamespace := toolscache.Indexers{toolscache.NamespaceIndex: toolscache.MetaNamespaceIndexFunc}
	lw := &toolscache.ListWatch{} // never run
	claims := newInformer(lw, &ipamv1alpha1.IPClaim{}, 0, byNamespace).GetIndexer()
	if _, ok := claims.GetIndexers()[toolscache.NamespaceIndex]; ok {
		t.Error("the claims' informer indexes claims by namespace")
	}
	if _, err := claims.ByIndex(toolscache.NamespaceIndex, "tenant"); err == nil {
		t.Error("a list of one namespace's claims from the cache answers, from an index that is not kept")
	}
	if _, ok := newInformer(lw, &corev1.Namespace{}, 0, byNamespace).GetIndexer().GetIndexers()[toolscache.NamespaceIndex]; !ok {
		t.Error("another kind's informer lost its index by namespace")
	}
	if _, ok := byNamespace[toolscache.NamespaceIndex]; !ok {
		t.Error("newInformer changed the indexers it was given")
	}

	const n = 10000
	records := make([]any, n)
	for i := range records {
		o, _ := recordClaim(fullClaim())
		c := o.(*ipam.ClaimRecord).Claim()
		c.Name, c.Namespace = fmt.Sprintf("claim-%d", i), fmt.Sprintf("tenant-%d", i%10)
		records[i], _ = recordClaim(c)
	}
	indexed := func(idx toolscache.Indexers) uint64 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		store := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, idx)
		for _, r := range records {
			if err := store.Add(r); err != nil {
				t.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(store)
		return (after.HeapAlloc - before.HeapAlloc) / n
	}
	t.Logf("a claim's store entry: %d B with the index by namespace, %d B without", indexed(byNamespace), indexed(toolscache.Indexers{}))
}
