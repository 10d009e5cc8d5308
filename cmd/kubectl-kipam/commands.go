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

package main

import (
	"bytes"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/kipam/kipam/internal/inspect"
	"github.com/kipam/kipam/internal/netutil"
)

// table aligns tab-separated cells in columns, with no trailing blanks.
type table struct {
	*tabwriter.Writer
	buf bytes.Buffer
	out io.Writer
}

func newTable(w io.Writer) *table {
	t := &table{out: w}
	t.Writer = tabwriter.NewWriter(&t.buf, 0, 8, 2, ' ', 0)
	return t
}

// Flush writes the table out.
func (t *table) Flush() error {
	if err := t.Writer.Flush(); err != nil {
		return err
	}
	var b strings.Builder
	for line := range strings.Lines(t.buf.String()) {
		b.WriteString(strings.TrimRight(line, " \n"))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(t.out, b.String())
	return err
}

// --- tree

func newTreeCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "tree [POOL]",
		Short: "Show the pool hierarchy and each pool's usage",
		Long: `Show the pool hierarchy: each family's address space with its top-level
pools, and every pool's children indented under it. For each pool: its
CIDR, its utilization (counted from its ledgers now), how many claims and
child pools it holds, its largest free prefix, and a mark (!) on a pool
that is Exhausted, Draining, Overlapping or not Ready. With POOL, only
that pool and what is under it.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.load(cmd.Context())
			if err != nil {
				return err
			}
			root := ""
			if len(args) == 1 {
				root = args[0]
			}
			nodes, err := c.Tree(root)
			if err != nil {
				return err
			}
			return o.print(nodes, func(w io.Writer) error { return printTree(w, nodes) })
		},
	}
}

func printTree(w io.Writer, nodes []*inspect.Node) error {
	t := newTable(w)
	fmt.Fprintln(t, "NAME\tCIDR\tUTILIZATION\tCLAIMS\tCHILDREN\tLARGEST-FREE\t")
	var walk func(n *inspect.Node, indent, branch string)
	walk = func(n *inspect.Node, indent, branch string) {
		name := indent + branch + n.Name
		if n.Space {
			name = indent + branch + netutil.Family(prefixOrZero(n.CIDR).Addr()) // the address space of the family
			fmt.Fprintf(t, "%s\t%s\t\t\t%d\t\t\n", name, n.CIDR, len(n.Children))
		} else {
			usage, claims, children, free := "", "", "", ""
			if u := n.Usage; u != nil {
				usage = fmt.Sprintf("%s %6s", bar(n.Used), u.Utilization)
				claims, children, free = fmt.Sprint(u.Claims), fmt.Sprint(u.ChildPools), "-"
				if u.LargestFreePrefix != nil {
					free = fmt.Sprintf("/%d", *u.LargestFreePrefix)
				}
			}
			marks := ""
			if len(n.Warnings) > 0 {
				marks = "! " + strings.Join(n.Warnings, ", ")
			}
			fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, n.CIDR, usage, claims, children, free, marks)
		}
		next := indent
		switch branch {
		case "├─ ":
			next += "│  "
		case "└─ ":
			next += "   "
		}
		for i, ch := range n.Children {
			b := "├─ "
			if i == len(n.Children)-1 {
				b = "└─ "
			}
			walk(ch, next, b)
		}
	}
	for _, n := range nodes {
		walk(n, "", "")
	}
	return t.Flush()
}

// bar draws a share from 0 to 1 in ten cells.
func bar(used float64) string {
	n := min(max(int(used*10), 0), 10)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", 10-n) + "]"
}

func prefixOrZero(s string) netip.Prefix {
	p, _ := netip.ParsePrefix(s)
	return p
}

// --- free

// freeSpace is what free prints: every free block, or how many /N fit.
type freeSpace struct {
	Pool string `json:"pool"`
	// Free are the largest free prefixes, largest first, at most --limit.
	Free []netip.Prefix `json:"free,omitempty"`
	// More is how many more free prefixes --limit left out.
	More int `json:"more,omitempty"`
	// Addresses is how many addresses are free in all.
	Addresses string `json:"addresses,omitempty"`
	// PrefixLength, Fit and First answer --prefix-length: how many
	// prefixes of that length fit, and the first of them.
	PrefixLength int            `json:"prefixLength,omitempty"`
	Fit          string         `json:"fit,omitempty"`
	First        []netip.Prefix `json:"first,omitempty"`
}

func newFreeCommand(o *options) *cobra.Command {
	var bits, limit int
	cmd := &cobra.Command{
		Use:   "free POOL",
		Short: "Show a pool's free space",
		Long: `Show a pool's free space as the largest free prefixes, largest first,
or with --prefix-length N how many /N the pool could still hand out and
the first of them, in the order it would hand them out (first fit).
Reserved, excluded and held (reuse grace) space is not free. POOL may
also be ipv4.space.kipam.dev or ipv6.space.kipam.dev: where a new
top-level pool could go.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 0 {
				return fmt.Errorf("--limit must be 0 (all) or more, not %d", limit)
			}
			c, err := o.load(cmd.Context())
			if err != nil {
				return err
			}
			out := freeSpace{Pool: args[0]}
			if cmd.Flags().Changed("prefix-length") {
				n, first, err := c.Fit(args[0], bits, limit)
				if err != nil {
					return err
				}
				out.PrefixLength, out.Fit, out.First = bits, n.String(), first
			} else {
				all, err := c.Free(args[0], 0)
				if err != nil {
					return err
				}
				total := new(big.Int)
				for _, p := range all {
					total.Add(total, netutil.Size(p))
				}
				out.Addresses = total.String()
				out.Free = all
				if limit > 0 && len(all) > limit {
					out.Free, out.More = all[:limit], len(all)-limit
				}
			}
			return o.print(out, func(w io.Writer) error { return printFree(w, &out) })
		},
	}
	cmd.Flags().IntVar(&bits, "prefix-length", 0, "Count the free prefixes of this length, and list the first --limit of them.")
	cmd.Flags().IntVar(&limit, "limit", 10, "How many prefixes to list (0: all).")
	return cmd
}

func printFree(w io.Writer, f *freeSpace) error {
	t := newTable(w)
	if f.Fit != "" {
		fmt.Fprintf(t, "pool %s can hand out %s more /%d\n", f.Pool, f.Fit, f.PrefixLength)
		if len(f.First) > 0 {
			fmt.Fprintln(t, "FIRST")
		}
		for _, p := range f.First {
			fmt.Fprintln(t, p)
		}
		return t.Flush()
	}
	fmt.Fprintf(t, "pool %s has %s free addresses\n", f.Pool, f.Addresses)
	if len(f.Free) > 0 {
		fmt.Fprintln(t, "PREFIX\tADDRESSES\t")
	}
	for _, p := range f.Free {
		fmt.Fprintf(t, "%s\t%s\t\n", p, netutil.Size(p))
	}
	if f.More > 0 {
		fmt.Fprintf(t, "... and %d smaller prefixes (--limit 0 lists them all)\n", f.More)
	}
	return t.Flush()
}

// --- who

func newWhoCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "who ADDRESS|CIDR",
		Short: "Show who holds an address or prefix",
		Long: `Show who holds an address or prefix now: every ledger entry over it, from
the top-level pool in its family's address space down through child pools
to the claim, each with the claim or pool that carries it, its
IPAllocation and since when (the IPAllocation's creation). An address
or prefix no claim holds says whether it is free, reserved or held in
the innermost pool around it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := parseQuery(args[0])
			if err != nil {
				return err
			}
			c, err := o.load(cmd.Context())
			if err != nil {
				return err
			}
			ans := c.Who(q)
			return o.print(ans, func(w io.Writer) error { return printWho(w, ans, o.now()) })
		},
	}
}

// parseQuery reads an address (its /32 or /128) or a prefix (masked).
func parseQuery(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		q, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q is neither an address nor a CIDR: %w", s, err)
		}
		p = q.Masked()
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return p, fmt.Errorf("%q is neither an address nor a CIDR: %w", s, err)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q: kipam serves no IPv4-mapped or zoned addresses", s)
	}
	return p, nil
}

func printWho(w io.Writer, ans *inspect.Answer, now time.Time) error {
	t := newTable(w)
	fmt.Fprintf(t, "%s\n", ans.Query)
	if len(ans.HeldBy) > 0 {
		fmt.Fprintln(t, "\nHELD BY")
		fmt.Fprintln(t, "POOL\tCIDR\tHOLDER\tALLOCATION\tSINCE")
		for _, h := range ans.HeldBy {
			holder := h.Kind + " " + h.Name
			if h.Namespace != "" {
				holder = h.Kind + " " + h.Namespace + "/" + h.Name
			}
			if h.Name == "" {
				holder = fmt.Sprintf("none (entry %s of %s)", h.Entry, h.Holder)
			}
			alloc, since := h.Allocation, ""
			if alloc == "" {
				alloc = "none"
			}
			if h.Since != nil {
				since = stamp(*h.Since, now)
			}
			fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\n", h.Pool, h.CIDR, holder, alloc, since)
		}
	}
	// Earlier holders, once kipam keeps a history, go here.
	if ans.State != "" {
		fmt.Fprintf(t, "\n%s %s\n", ans.Query, ans.State)
	}
	return t.Flush()
}

// stamp is a time and how long ago it was.
func stamp(t metav1.Time, now time.Time) string {
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), duration.HumanDuration(now.Sub(t.Time)))
}

// --- check

func newCheckCommand(o *options) *cobra.Command {
	var (
		grace time.Duration
		all   bool
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Report every inconsistency among kipam's objects",
		Long: `Report every inconsistency among kipam's pools, claims, IPAllocations and
ledgers: overlapping claims, pools or ledger entries; ledger entries no
live claim or pool carries; bound claims without a ledger entry or an
IPAllocation; IPAllocations whose claim or pool is gone; pools whose
status disagrees with their ledgers; claims outside their pool.

States kipam repairs on its own (an entry of a create still in flight, an
IPAllocation about to be created or released) are reported once older
than --grace; give it at least kipam's --orphan-grace.

With -n, only the problems that concern claims of that namespace.

Exit status: 0 no problems, 1 problems found, 2 the check could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			namespace := ""
			if cmd.Flags().Changed("namespace") {
				if all {
					return &exitCode{exitNotRun, fmt.Errorf("-n and -A exclude each other")}
				}
				namespace = *o.flags.Namespace
			}
			c, err := o.load(cmd.Context())
			if err != nil {
				return &exitCode{exitNotRun, err}
			}
			problems := c.Check(o.now(), grace)
			if namespace != "" {
				problems = slices.DeleteFunc(problems, func(p inspect.Problem) bool { return !slices.Contains(p.Namespaces, namespace) })
			}
			if problems == nil {
				problems = []inspect.Problem{}
			}
			if err := o.print(problems, func(w io.Writer) error { return printCheck(w, problems) }); err != nil {
				return &exitCode{exitNotRun, err}
			}
			if len(problems) > 0 {
				fmt.Fprintf(o.streams.ErrOut, "%d problems found\n", len(problems))
				return &exitCode{code: exitFound}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", 5*time.Minute, "How old a state kipam repairs on its own must be to be reported.")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "Report the problems of every namespace (the default).")
	return cmd
}

func printCheck(w io.Writer, problems []inspect.Problem) error {
	if len(problems) == 0 {
		_, err := fmt.Fprintln(w, "no problems found")
		return err
	}
	t := newTable(w)
	fmt.Fprintln(t, "KIND\tOBJECT\tPROBLEM")
	for _, p := range problems {
		fmt.Fprintf(t, "%s\t%s\t%s\n", p.Kind, p.Object, p.Message)
	}
	return t.Flush()
}
