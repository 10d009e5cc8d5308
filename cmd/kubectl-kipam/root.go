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
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/inspect"
)

// Exit statuses. check uses all three, like diff: 0 nothing found, 1
// problems found, 2 it could not look; the other commands 0 or 1.
const (
	exitOK       = 0
	exitFound    = 1
	exitError    = 1
	exitNotRun   = 2
	outputTable  = "table"
	outputJSON   = "json"
	outputYAML   = "yaml"
	requestLimit = 2 * time.Minute
)

// exitCode is an error that ends the command with a status of its own.
type exitCode struct {
	code int
	err  error // printed as "error: ..." unless nil
}

func (e *exitCode) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

// options are what every command shares.
type options struct {
	streams genericiooptions.IOStreams
	flags   *genericclioptions.ConfigFlags
	output  string
	now     func() time.Time
}

// run runs the plugin with args and returns its exit status.
func run(args []string, streams genericiooptions.IOStreams, now func() time.Time) int {
	cmd := newRootCommand(streams, now)
	cmd.SetArgs(args)
	err := cmd.Execute()
	var ec *exitCode
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ec):
		if ec.err != nil {
			fmt.Fprintln(streams.ErrOut, "error:", ec.err)
		}
		return ec.code
	default:
		fmt.Fprintln(streams.ErrOut, "error:", err)
		return exitError
	}
}

func newRootCommand(streams genericiooptions.IOStreams, now func() time.Time) *cobra.Command {
	o := &options{streams: streams, flags: genericclioptions.NewConfigFlags(true), now: now}
	cmd := &cobra.Command{
		Use:   "kubectl-kipam",
		Short: "Inspect kipam's pools, claims and ledgers",
		Long: `Inspect kipam's pools, claims and ledgers, read-only:

  kubectl kipam tree [POOL]          the pool hierarchy and each pool's usage
  kubectl kipam free POOL            a pool's free space
  kubectl kipam who ADDRESS|CIDR     who holds an address or prefix
  kubectl kipam check                every inconsistency among kipam's objects`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Annotations: map[string]string{
			cobra.CommandDisplayNameAnnotation: "kubectl kipam",
		},
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if !slices.Contains([]string{outputTable, outputJSON, outputYAML}, o.output) {
				return fmt.Errorf("--output must be table, json or yaml, not %q", o.output)
			}
			return nil
		},
	}
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	o.flags.AddFlags(cmd.PersistentFlags())
	cmd.PersistentFlags().StringVarP(&o.output, "output", "o", outputTable, "Output format: table, json or yaml.")
	cmd.AddCommand(newTreeCommand(o), newFreeCommand(o), newWhoCommand(o), newCheckCommand(o))
	return cmd
}

// load reads the cluster through a client built from the kubeconfig flags.
func (o *options) load(ctx context.Context) (*inspect.Cluster, error) {
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := ipamv1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := capiv1beta2.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", cfg.Host, err)
	}
	ctx, cancel := context.WithTimeout(ctx, requestLimit)
	defer cancel()
	cluster, err := inspect.Load(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("reading kipam's objects from %s (is kipam installed?): %w", cfg.Host, err)
	}
	cluster.At = o.now()
	return cluster, nil
}

// print writes v as JSON or YAML, or calls table.
func (o *options) print(v any, table func(io.Writer) error) error {
	switch o.output {
	case outputJSON:
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(o.streams.Out, "%s\n", b)
		return err
	case outputYAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = o.streams.Out.Write(b)
		return err
	}
	return table(o.streams.Out)
}
