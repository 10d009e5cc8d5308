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

package inspect

import (
	"cmp"
	"fmt"
	"math/big"
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// Node is one pool in the tree, or a family's address space at its top.
type Node struct {
	// Name is the pool's name, or the address space's.
	Name string `json:"name"`
	// CIDR is the pool's cidr.
	CIDR string `json:"cidr,omitempty"`
	// Space marks a family's address space: its children are the
	// top-level pools of the family.
	Space bool `json:"space,omitempty"`
	// Usage is the pool's status as recounted from its ledgers when the
	// cluster was read (what the pool controller would write); nil for an
	// address space and for a pool that cannot be counted.
	Usage *ipamv1alpha1.IPPoolStatus `json:"usage,omitempty"`
	// Used is the share of the space that can be handed out that is
	// allocated, from 0 to 1: Usage.Utilization as a number.
	Used float64 `json:"used"`
	// Warnings are what needs a look: Exhausted, Draining, Overlapping,
	// NotReady (with the reason), ParentMissing, or why it cannot be
	// counted.
	Warnings []string `json:"warnings,omitempty"`
	// Children are the pools carved from it, in address order.
	Children []*Node `json:"children,omitempty"`
}

// Tree returns the pool hierarchy: the address space of each family that
// has pools (IPv4 first), with its top-level pools under it and each
// pool's children under the pool. With root set, only that pool and what
// is under it. A pool whose parent does not exist stands under its
// family, marked ParentMissing.
func (c *Cluster) Tree(root string) ([]*Node, error) {
	nodes := map[string]*Node{}
	for name, pool := range c.Pools {
		nodes[name] = c.node(pool)
	}
	spaces := map[string]*Node{}
	var loose []*Node // pools without a cidr: of no family
	for name, pool := range c.Pools {
		n := nodes[name]
		if parent, ok := nodes[pool.Spec.ParentPool]; ok {
			parent.Children = append(parent.Children, n)
			continue
		}
		if pool.Spec.ParentPool != "" {
			n.Warnings = append(n.Warnings, "ParentMissing: "+pool.Spec.ParentPool)
		}
		p := prefixOf(pool.Spec.CIDR)
		if !p.IsValid() {
			loose = append(loose, n)
			continue
		}
		space := ipam.Space(p.Addr())
		if spaces[space.Name] == nil {
			spaces[space.Name] = &Node{Name: space.Name, CIDR: space.Spec.CIDR, Space: true}
		}
		spaces[space.Name].Children = append(spaces[space.Name].Children, n)
	}
	for _, n := range nodes {
		sortNodes(n.Children)
	}
	if root != "" {
		n, ok := nodes[root]
		if !ok {
			return nil, fmt.Errorf("no pool %s", root)
		}
		return []*Node{n}, nil
	}
	var out []*Node
	for _, name := range []string{ipam.SpaceIPv4, ipam.SpaceIPv6} {
		if s := spaces[name]; s != nil {
			sortNodes(s.Children)
			out = append(out, s)
		}
	}
	sortNodes(loose)
	return append(out, loose...), nil
}

// node is pool's node, without its children.
func (c *Cluster) node(pool *ipamv1alpha1.IPPool) *Node {
	n := &Node{Name: pool.Name, CIDR: pool.Spec.CIDR}
	conds := pool.Status.Conditions
	if meta.IsStatusConditionTrue(conds, ipamv1alpha1.ConditionExhausted) {
		n.Warnings = append(n.Warnings, "Exhausted")
	}
	ready := meta.FindStatusCondition(conds, ipamv1alpha1.ConditionReady)
	switch {
	case pool.DeletionTimestamp != nil || (ready != nil && ready.Reason == ipamv1alpha1.ReasonDraining):
		n.Warnings = append(n.Warnings, "Draining")
	case ready != nil && ready.Status != metav1.ConditionTrue && ready.Reason != ipamv1alpha1.ReasonOverlap:
		n.Warnings = append(n.Warnings, "NotReady: "+ready.Reason)
	}
	if meta.IsStatusConditionTrue(conds, ipamv1alpha1.ConditionOverlapping) {
		n.Warnings = append(n.Warnings, "Overlapping")
	}
	if pool.Spec.CIDR == "" {
		return n
	}
	recounted, snap, err := c.recount(pool, c.At)
	if err != nil {
		n.Warnings = append(n.Warnings, "Uncounted: "+err.Error())
		return n
	}
	n.Usage = &recounted.Status
	n.Usage.Conditions = nil
	u := snap.Usage
	if usable := new(big.Int).Sub(u.Capacity, u.Reserved); usable.Sign() > 0 {
		n.Used, _ = new(big.Rat).SetFrac(u.Allocated, usable).Float64()
	}
	return n
}

// sortNodes orders siblings by family and address, then name.
func sortNodes(nodes []*Node) {
	slices.SortFunc(nodes, func(a, b *Node) int {
		pa, pb := prefixOf(a.CIDR), prefixOf(b.CIDR)
		if pa.IsValid() && pb.IsValid() {
			if c := comparePrefixes(pa, pb); c != 0 {
				return c
			}
		}
		return cmp.Compare(a.Name, b.Name)
	})
}
