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
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"unique"
	"weak"

	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// kipamKeys starts every annotation kipam reads on a claim.
const kipamKeys = "ipam.kipam.dev/"

// A ClaimRecord is what kipam's cache keeps of an IPClaim instead of the
// object (docs/design.md, "Memory per claim"): every field kipam reads,
// in about half the memory of the decoded claim. Its name, namespace,
// uid, resourceVersion, generation, timestamps, finalizers, kipam's own
// annotations (ipam.kipam.dev/...), spec and status are kept; its labels,
// owner references, generateName, deletion grace period, other
// annotations and managedFields are not.
//
// It is a client.Object, so an informer keeps it, indexes it and hands it
// to event handlers as it would the claim. Its DeepCopyObject returns the
// claim rebuilt (Claim), not a ClaimRecord: controller-runtime's cache
// reader copies every object it returns with DeepCopyObject, so every Get
// and List of IPClaims through the cache returns an IPClaim of its own,
// as it did when the cache kept claims. A Get with UnsafeDisableDeepCopy,
// or such a List that finds a claim, fails (the cache holds no IPClaim to
// hand out), and so would client-go's cache mutation detector
// (KUBE_CACHE_MUTATION_DETECTOR), which compares what it stores with a
// DeepCopyObject of it. A record is never changed once made: its setters
// panic.
type ClaimRecord struct {
	// own is the strings that are the claim's own, one after another
	// (pack): its name, resourceVersion, entry annotation, spec.cidr,
	// status.cidr unless sameCIDR and status.allocation unless derived
	// (the parts: part), then the messages of its conditions that are
	// not derived. ends says where each part ends.
	own  string
	ends [parts]uint32
	uid  [16]byte // the uid, when it is a UUID other than nil spelt as the API server spells it; else rare.uid
	// generation is metadata.generation.
	generation int64
	// created is in unix seconds, as every time of an object is on the
	// wire (RFC 3339 to the second); 0 is the zero time.
	created int64
	// shared is what many claims repeat: one handle, where four strings
	// and a list took 72 bytes.
	shared unique.Handle[claimShared]
	// spec is the claim's spec without its cidr and cidrs, shared by every
	// record whose spec is otherwise equal (shareSpec).
	spec       *ipamv1alpha1.IPClaimSpec
	conditions []recordedCondition
	rare       *rareClaimFields // what few claims have
	// sameCIDR: status.cidr is spec.cidr, and not kept twice.
	sameCIDR bool
	// derived: status.allocation is AllocationName(status.pool,
	// status.cidr), as the claim controller names it, and not kept.
	derived bool
}

// claimShared is what a ClaimRecord shares with the records of other
// claims of the same namespace, pool and finalizers.
type claimShared struct {
	namespace string
	// pool is kipam's annotation PoolAnnotation (the entry annotation is
	// a part of own).
	pool       string
	statusPool string
	// finalizers is the claim's finalizers, each followed by a NUL, which
	// no finalizer holds: the API server takes only qualified names.
	finalizers string
}

// joinFinalizers is fs as claimShared keeps them.
func joinFinalizers(fs []string) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f)
		b.WriteByte(0)
	}
	return b.String()
}

// claimFinalizers is the finalizers of almost every claim, which their
// records share.
var (
	claimFinalizers       = []string{ipamv1alpha1.ClaimFinalizer}
	joinedClaimFinalizers = joinFinalizers(claimFinalizers)
)

func (r *ClaimRecord) namespace() string  { return r.shared.Value().namespace }
func (r *ClaimRecord) pool() string       { return r.shared.Value().pool }
func (r *ClaimRecord) statusPool() string { return r.shared.Value().statusPool }

// The parts of a ClaimRecord's own string.
const (
	partName = iota
	partResourceVersion
	partEntry
	partCIDR
	partStatusCIDR
	partAllocation
	parts
)

// part is the i-th part of r's own string.
func (r *ClaimRecord) part(i int) string { return PackedPart(r.own, r.ends[:], i) }

// PackStrings copies strs into one new string, so that what they were cut
// from (a decoded object) is not kept alive by them, and writes into ends
// where each of the first len(ends) ends: PackedPart finds them again.
// Packed, a record's strings are one object of the heap, not several
// among a decoder's garbage.
func PackStrings(ends []uint32, strs ...string) string {
	n := 0
	for _, s := range strs {
		n += len(s)
	}
	var b strings.Builder
	b.Grow(n)
	for i, s := range strs {
		b.WriteString(s)
		if i < len(ends) {
			ends[i] = uint32(b.Len())
		}
	}
	return b.String()
}

// PackedPart is the i-th string PackStrings packed into own with ends;
// the one after the last end runs to the end of own.
func PackedPart(own string, ends []uint32, i int) string {
	start, end := uint32(0), uint32(len(own))
	if i > 0 {
		start = ends[i-1]
	}
	if i < len(ends) {
		end = ends[i]
	}
	return own[start:end]
}

// entry is kipam's annotation EntryAnnotation.
func (r *ClaimRecord) entry() string { return r.part(partEntry) }

// cidr is spec.cidr.
func (r *ClaimRecord) cidr() string { return r.part(partCIDR) }

// statusCIDR is status.cidr.
func (r *ClaimRecord) statusCIDR() string {
	if r.sameCIDR {
		return r.cidr()
	}
	return r.part(partStatusCIDR)
}

// allocation is status.allocation.
func (r *ClaimRecord) allocation() string {
	if r.derived {
		return derivedAllocation(r.statusPool(), r.statusCIDR())
	}
	return r.part(partAllocation)
}

// deleted is the deletion timestamp in unix seconds, 0 for none (the API
// server never sets the epoch itself).
func (r *ClaimRecord) deleted() int64 {
	if r.rare == nil {
		return 0
	}
	return r.rare.deleted
}

// rareClaimFields are a ClaimRecord's fields that most claims leave empty.
type rareClaimFields struct {
	uid         types.UID         // a uid that is not a UUID
	annotations map[string]string // kipam's annotations but the pool and the entry
	// spec.cidrs, status.cidrs and status.allocations.
	cidrs, statusCIDRs, allocations []string
	expires                         int64 // status.expiresAt in unix seconds (a claim with a ttlSeconds); 0 for none
	deleted                         int64 // the deletion timestamp in unix seconds (a claim being deleted); 0 for none
}

// A recordedCondition is a condition of a claim's status as its record
// keeps it, in 48 bytes where a metav1.Condition takes 96: its type,
// status and reason as one handle that claims share, its time as unix
// seconds and nanoseconds, and its message unless allocated says it is the Ready
// message of a claim that holds one prefix (AllocatedMessage), which is
// then not kept.
type recordedCondition struct {
	kind       unique.Handle[conditionKind]
	generation int64 // observedGeneration
	// at and nanos are lastTransitionTime in unix seconds and
	// nanoseconds, exactly as decoded (a client other than kipam may
	// write fractions of a second, or the epoch); nanos is -1 for the
	// zero time.
	at        int64
	message   string
	nanos     int32
	allocated bool
}

// conditionKind is what a condition says apart from its message and
// times: few values, which every claim repeats.
type conditionKind struct{ typ, status, reason string }

// AllocatedMessage is the Ready message of a claim holding cidr from
// pool, as the claim controller writes it (and the message of each of a
// dual-stack claim's two prefixes).
func AllocatedMessage(cidr, pool string) string { return cidr + allocatedFrom + pool }

const allocatedFrom = " allocated from pool "

// isAllocatedMessage reports whether m is AllocatedMessage(cidr, pool),
// without making it.
func isAllocatedMessage(m, cidr, pool string) bool {
	rest, ok := strings.CutPrefix(m, cidr)
	if !ok {
		return false
	}
	rest, ok = strings.CutPrefix(rest, allocatedFrom)
	return ok && rest == pool
}

// recordCondition is c as a record of a claim whose status.cidr and
// status.pool are cidr and pool keeps it.
func recordCondition(c metav1.Condition, cidr, pool string) recordedCondition {
	out := recordedCondition{
		kind:       unique.Make(conditionKind{c.Type, string(c.Status), c.Reason}),
		generation: c.ObservedGeneration, message: c.Message, nanos: -1,
	}
	if t := c.LastTransitionTime.Time; !t.IsZero() {
		out.at, out.nanos = t.Unix(), int32(t.Nanosecond())
	}
	if cidr != "" && isAllocatedMessage(c.Message, cidr, pool) {
		out.message, out.allocated = "", true
	}
	return out
}

// condition is c rebuilt, for a claim whose status.cidr and status.pool
// are cidr and pool.
func (c recordedCondition) condition(cidr, pool string) metav1.Condition {
	k := c.kind.Value()
	out := metav1.Condition{Type: k.typ, Status: metav1.ConditionStatus(k.status), Reason: k.reason,
		ObservedGeneration: c.generation, Message: c.message}
	if c.nanos >= 0 {
		out.LastTransitionTime = metav1.NewTime(time.Unix(c.at, int64(c.nanos)))
	}
	if c.allocated {
		out.Message = AllocatedMessage(cidr, pool)
	}
	return out
}

// derivedAllocation is the name the claim controller gives the
// IPAllocation of cidr in pool, "" when cidr is not a prefix.
func derivedAllocation(pool, cidr string) string {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || pool == "" {
		return ""
	}
	return AllocationName(pool, p)
}

// RecordClaim returns the record of c. What the record keeps of c's own
// it copies (pack), so that c, with everything the record leaves out, is
// garbage once it is decoded; the strings many claims repeat (namespace,
// pool, finalizer, condition types and reasons) are shared. The record
// may share c's rarer fields (a dual-stack claim's lists, kipam's other
// annotations) and the spec's: c must not be changed afterwards.
func RecordClaim(c *ipamv1alpha1.IPClaim) *ClaimRecord {
	r := &ClaimRecord{generation: c.Generation, created: unix(c.CreationTimestamp)}
	shared := claimShared{namespace: c.Namespace, statusPool: c.Status.Pool, finalizers: joinedClaimFinalizers}
	if !slices.Equal(c.Finalizers, claimFinalizers) {
		shared.finalizers = joinFinalizers(c.Finalizers)
	}
	own := [parts]string{partName: c.Name, partResourceVersion: c.ResourceVersion, partCIDR: c.Spec.CIDR,
		partStatusCIDR: c.Status.CIDR, partAllocation: c.Status.Allocation}
	if c.Status.CIDR != "" && c.Status.CIDR == c.Spec.CIDR {
		own[partStatusCIDR], r.sameCIDR = "", true
	}
	if a := c.Status.Allocation; a != "" && a == derivedAllocation(shared.statusPool, c.Status.CIDR) {
		own[partAllocation], r.derived = "", true
	}
	if c.Status.Conditions != nil { // an empty list stays one
		r.conditions = make([]recordedCondition, len(c.Status.Conditions))
		for i, cond := range c.Status.Conditions {
			r.conditions[i] = recordCondition(cond, c.Status.CIDR, shared.statusPool)
		}
	}
	rare := rareClaimFields{cidrs: c.Spec.CIDRs, statusCIDRs: c.Status.CIDRs, allocations: c.Status.Allocations}
	if c.Status.ExpiresAt != nil {
		rare.expires = unix(*c.Status.ExpiresAt)
	}
	if c.DeletionTimestamp != nil {
		rare.deleted = unix(*c.DeletionTimestamp)
	}
	if u, err := uuid.Parse(string(c.UID)); err == nil && u != uuid.Nil && u.String() == string(c.UID) {
		r.uid = u
	} else {
		rare.uid = c.UID
	}
	// An empty pool or entry annotation is, to kipam, no annotation, and
	// is kept as none.
	for k, v := range c.Annotations {
		switch {
		case k == PoolAnnotation:
			shared.pool = v
		case k == EntryAnnotation:
			own[partEntry] = v
		case strings.HasPrefix(k, kipamKeys):
			if rare.annotations == nil {
				rare.annotations = map[string]string{}
			}
			if k == SecondaryPoolAnnotation {
				v = intern(v)
			}
			rare.annotations[intern(k)] = v
		}
	}
	if rare.uid != "" || rare.annotations != nil || rare.cidrs != nil || rare.statusCIDRs != nil || rare.allocations != nil ||
		rare.expires != 0 || rare.deleted != 0 {
		r.rare = &rare
	}
	r.shared = unique.Make(shared)        // its strings cloned, if new
	spec := new(ipamv1alpha1.IPClaimSpec) // not &c.Spec, which would keep all of c
	*spec = c.Spec
	spec.CIDR, spec.CIDRs = "", nil
	r.spec = shareSpec(spec)
	r.pack(own)
	return r
}

// pack copies the strings that are the claim's own, the parts of own and
// the messages of its conditions that are not derived, into one new
// string, and r's lists into new ones. Decoded, each is a small object of
// its own among the decoder's garbage, and one kept object holds a whole
// span of the heap: packed, a record keeps three objects besides its own,
// next to each other.
func (r *ClaimRecord) pack(own [parts]string) {
	strs := own[:]
	for _, c := range r.conditions {
		strs = append(strs, c.message)
	}
	r.own = PackStrings(r.ends[:], strs...)
	at := int(r.ends[parts-1])
	for i := range r.conditions {
		m := &r.conditions[i].message
		*m, at = r.own[at:at+len(*m)], at+len(*m)
	}
}

// Claim returns the claim r records, rebuilt: a new object, which the
// caller may change.
func (r *ClaimRecord) Claim() *ipamv1alpha1.IPClaim {
	c := &ipamv1alpha1.IPClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name: r.GetName(), Namespace: r.namespace(), UID: r.GetUID(), ResourceVersion: r.GetResourceVersion(), Generation: r.generation,
			CreationTimestamp: timeOf(r.created), DeletionTimestamp: timePtrOf(r.deleted()),
			Finalizers: slices.Clone(r.GetFinalizers()), Annotations: r.GetAnnotations(),
		},
		Status: ipamv1alpha1.IPClaimStatus{CIDR: r.statusCIDR(), Pool: r.statusPool(), Allocation: r.allocation()},
	}
	if r.conditions != nil {
		c.Status.Conditions = make([]metav1.Condition, len(r.conditions))
		for i, cond := range r.conditions {
			c.Status.Conditions[i] = cond.condition(c.Status.CIDR, c.Status.Pool)
		}
	}
	r.spec.DeepCopyInto(&c.Spec)
	c.Spec.CIDR = r.cidr()
	if r.rare != nil {
		c.Spec.CIDRs = slices.Clone(r.rare.cidrs)
		c.Status.CIDRs, c.Status.Allocations = slices.Clone(r.rare.statusCIDRs), slices.Clone(r.rare.allocations)
		c.Status.ExpiresAt = timePtrOf(r.rare.expires)
	}
	return c
}

// Holdings is Holdings of the claim r records.
func (r *ClaimRecord) Holdings() []Holding {
	var cidrs []string
	var secondary string
	if r.rare != nil {
		cidrs, secondary = r.rare.cidrs, r.rare.annotations[SecondaryPoolAnnotation]
	}
	return holdings(r.cidr(), cidrs, poolOf(r.pool(), r.spec.Pool), secondary, entryIDOf(r.entry(), r.GetUID))
}

// HoldingOf is HoldingOf of the claim r records. A record whose cidrs are
// not cidr is answered without working out its holdings: a look-up reads
// through every claim of a block of 256 (the holdings index) for the one
// it asks for.
func (r *ClaimRecord) HoldingOf(pool, cidr string) (Holding, bool) {
	if r.cidr() != cidr && (r.rare == nil || !slices.Contains(r.rare.cidrs, cidr)) {
		return Holding{}, false // Holdings names spec.cidr and spec.cidrs[1] alone
	}
	return holdingOf(r.Holdings(), pool, cidr)
}

// DeepCopyObject returns the claim r records, rebuilt (Claim).
func (r *ClaimRecord) DeepCopyObject() k8sruntime.Object { return r.Claim() }

// GetObjectKind says nothing: the cache reader sets the kind of what it
// returns.
func (r *ClaimRecord) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (r *ClaimRecord) GetNamespace() string { return r.namespace() }
func (r *ClaimRecord) GetName() string      { return r.part(partName) }
func (r *ClaimRecord) GetGenerateName() string {
	return ""
}
func (r *ClaimRecord) GetUID() types.UID {
	if r.rare != nil && r.rare.uid != "" {
		return r.rare.uid
	}
	if r.uid == ([16]byte{}) {
		return ""
	}
	return types.UID(uuid.UUID(r.uid).String())
}
func (r *ClaimRecord) GetResourceVersion() string { return r.part(partResourceVersion) }
func (r *ClaimRecord) GetGeneration() int64       { return r.generation }
func (r *ClaimRecord) GetSelfLink() string        { return "" }
func (r *ClaimRecord) GetCreationTimestamp() metav1.Time {
	return timeOf(r.created)
}
func (r *ClaimRecord) GetDeletionTimestamp() *metav1.Time          { return timePtrOf(r.deleted()) }
func (r *ClaimRecord) GetDeletionGracePeriodSeconds() *int64       { return nil }
func (r *ClaimRecord) GetLabels() map[string]string                { return nil }
func (r *ClaimRecord) GetOwnerReferences() []metav1.OwnerReference { return nil }
func (r *ClaimRecord) GetManagedFields() []metav1.ManagedFieldsEntry {
	return nil
}

// GetFinalizers returns the claim's finalizers: a list that records share
// for the usual one, which the caller must not change, else a new one. An
// empty list comes back as none, as the API server sends it.
func (r *ClaimRecord) GetFinalizers() []string {
	switch f := r.shared.Value().finalizers; f {
	case joinedClaimFinalizers:
		return claimFinalizers
	case "":
		return nil
	default:
		return strings.Split(f[:len(f)-1], "\x00")
	}
}

// GetAnnotations returns a new map of kipam's annotations on the claim.
func (r *ClaimRecord) GetAnnotations() map[string]string {
	var out map[string]string
	if r.rare != nil && r.rare.annotations != nil {
		out = maps.Clone(r.rare.annotations)
	}
	for k, v := range map[string]string{PoolAnnotation: r.pool(), EntryAnnotation: r.entry()} {
		if v == "" {
			continue
		}
		if out == nil {
			out = make(map[string]string, 2)
		}
		out[k] = v
	}
	return out
}

func readOnly() { panic("ipam: a ClaimRecord is kipam's cache's, and never changed") }

func (r *ClaimRecord) SetNamespace(string)                          { readOnly() }
func (r *ClaimRecord) SetName(string)                               { readOnly() }
func (r *ClaimRecord) SetGenerateName(string)                       { readOnly() }
func (r *ClaimRecord) SetUID(types.UID)                             { readOnly() }
func (r *ClaimRecord) SetResourceVersion(string)                    { readOnly() }
func (r *ClaimRecord) SetGeneration(int64)                          { readOnly() }
func (r *ClaimRecord) SetSelfLink(string)                           { readOnly() }
func (r *ClaimRecord) SetCreationTimestamp(metav1.Time)             { readOnly() }
func (r *ClaimRecord) SetDeletionTimestamp(*metav1.Time)            { readOnly() }
func (r *ClaimRecord) SetDeletionGracePeriodSeconds(*int64)         { readOnly() }
func (r *ClaimRecord) SetLabels(map[string]string)                  { readOnly() }
func (r *ClaimRecord) SetAnnotations(map[string]string)             { readOnly() }
func (r *ClaimRecord) SetFinalizers([]string)                       { readOnly() }
func (r *ClaimRecord) SetOwnerReferences([]metav1.OwnerReference)   { readOnly() }
func (r *ClaimRecord) SetManagedFields([]metav1.ManagedFieldsEntry) { readOnly() }

// unix is t in unix seconds, 0 for the zero time.
func unix(t metav1.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// timeOf is the time of unix seconds s, as a decoded object holds it
// (local).
func timeOf(s int64) metav1.Time {
	if s == 0 {
		return metav1.Time{}
	}
	return metav1.NewTime(time.Unix(s, 0))
}

// timePtrOf is timeOf, nil for 0.
func timePtrOf(s int64) *metav1.Time {
	if s == 0 {
		return nil
	}
	t := timeOf(s)
	return &t
}

// specs holds one copy of each distinct claim spec (less its cidrs) that
// a record refers to: the claims one controller creates ask alike, and a
// spec is over 200 bytes. It refers to them weakly, so a spec no record
// holds any more is collected, and its entry then dropped.
var specs = struct {
	sync.Mutex
	m map[string]weak.Pointer[ipamv1alpha1.IPClaimSpec]
}{m: map[string]weak.Pointer[ipamv1alpha1.IPClaimSpec]{}}

// shareSpec returns the copy of s that records share: s itself if no
// record holds an equal spec. A spec with a stickyKey, which is each
// claim's own, is not shared: its entry in the table would cost more than
// it saves.
func shareSpec(s *ipamv1alpha1.IPClaimSpec) *ipamv1alpha1.IPClaimSpec {
	if s.StickyKey != "" {
		return s
	}
	key, err := json.Marshal(s)
	if err != nil {
		return s
	}
	k := string(key)
	specs.Lock()
	defer specs.Unlock()
	if p := specs.m[k].Value(); p != nil {
		return p
	}
	s.Pool = intern(s.Pool)
	specs.m[k] = weak.Make(s)
	runtime.AddCleanup(s, func(k string) {
		specs.Lock()
		defer specs.Unlock()
		if specs.m[k].Value() == nil { // not a newer copy's
			delete(specs.m, k)
		}
	}, k)
	return s
}
