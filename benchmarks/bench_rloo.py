"""alignlab's RLOO (`alignlab rloo`, train/rloo.py + train/online.py) against TRL 1.16's RLOOTrainer, on the same work.

TRL runs in its own virtual environment, ``.bench-venvs/trl-1.16`` (made on first use; see
_online_bench.py), alignlab in .venv; each trainer in its own child process. Both get the same
policy (alignlab's ``load_model(--model)`` in float32; TRL reads it saved as a Hugging Face folder),
the same prompts in the same order, the same reward (``_online_bench.reward``, a plain function of
the response text), LoRA on both sides (alignlab's LORA_TARGETS, r, alpha, no dropout, TRL's
adapters copied from alignlab's initialisation) or full fine-tuning on both, and a reference on
both (beta > 0: in full mode a frozen copy, in LoRA mode the policy with its adapters disabled).

How the settings map (alignlab RLOOConfig  ->  TRL 1.16 RLOOConfig):

    prompts_per_iteration P                  generation_batch_size / num_generations = P (below)
    group_size G                             num_generations G
    rows per step P*G; minibatch_size 0      per_device_train_batch_size P*G, steps_per_generation 1,
      (the whole rollout), micro_batch 0       gradient_accumulation_steps 1: one optimizer step per
                                               rollout (generation_batch_size = P*G) on both sides
    epochs 1                                 num_iterations 1
    max_new_tokens                           max_completion_length (both stop at EOS)
    temperature (no top-k/top-p)             temperature, top_p 1.0, top_k 0
    kl_coef = --beta, kl_in 'reward'         beta: both subtract beta * sum_t (log pi_old - log ref)
                                               (k1, per sequence) from the reward
    baseline 'group'                         (RLOO's leave-one-out over the group)
    normalize_advantages False               normalize_advantages False
    cliprange 0.2, cliprange_high 0          epsilon 0.2, epsilon_high None (= epsilon)
    lr (0: 1e-5 full, 1.5e-4 LoRA)           learning_rate, the same value
    lr_schedule 'constant'                   lr_scheduler_type 'constant', warmup_steps 0
    AdamW eps 1e-5, no weight decay          adam_epsilon 1e-5, weight_decay 0, optim adamw_torch_fused
    max_grad_norm 1.0                        max_grad_norm 1.0
    missing_eos_penalty 0                    (none)
    lora, lora_r, lora_alpha                 peft_config LoraConfig(r, lora_alpha, lora_dropout 0,
                                               target_modules LORA_TARGETS)
    dtype float32, no recomputation          bf16 False, fp16 False, gradient_checkpointing False
                                               (TRL's default is on; --trl-gradient-checkpointing)
    prompt order: its seeded per-iteration   the dataset holds those prompts in that order,
      shuffle                                  shuffle_dataset False
    sample_every 0, no checkpoints           log_completions False, save_strategy 'no', logging_steps 1
                                               (alignlab logs its metrics every iteration too)
    use_vllm False (transformers' generate)

What each side computes per step (B = P*G rows):

    alignlab                                       TRL 1.16
    1. sample B rows with its KV-cache sampler,    1. transformers' generate(), B rows
       keeping each token's log-prob and entropy
       (no policy pass for old log-probs)          2. a policy pass without grad for the old log-probs
    2. a reference pass (response positions)       3. a reference pass
    3. the reward on the texts                     4. the reward on the texts
    4. k1 KL in the reward, leave-one-out          5. the same
       advantages
    5. one policy pass with grad, backward,        6. one policy pass with grad (chunked log-probs and
       clip, AdamW                                    entropy), backward, clip, AdamW

Timing: a global optimizer-step hook (the same code on both sides) timestamps every step; a step's
time holds a whole cycle (rollout, scoring, update, logging). s/step is the wall time of the
``--steps`` measured steps after ``--warmup`` steps divided by their count (the mean), beside
their median; peak RSS is the child's ``ru_maxrss`` at the end of the last measured step (the child
stops there), "train peak" the highest RSS a 10 ms poller saw during the measured steps. The report
prints the load average (``os.getloadavg``) at the start and end of each side's measured steps and
the highest the parent saw while the child ran: other jobs may share the machine.

    .venv/bin/python benchmarks/bench_rloo.py --model tiny --steps 2          # quick check
    .venv/bin/python benchmarks/bench_rloo.py                                 # Gemma 3 270M, full, 4 x 4, 32 tokens
    .venv/bin/python benchmarks/bench_rloo.py --mode lora
    .venv/bin/python benchmarks/bench_rloo.py --threads 1 --repeats 2         # steadier on a shared machine

The report ends with the project's target: at least 2x TRL's speed at no more memory.
"""

from __future__ import annotations

import argparse

from _online_bench import (add_arguments, alignlab_fields, compare, run_worker, trl_fields, trl_reward,
                           worker_alignlab, worker_trl)


def run_alignlab(spec: dict, clock) -> dict:
    from alignlab.train.rloo import RLOOConfig, train_rloo

    config = RLOOConfig(**alignlab_fields(spec), baseline="group", normalize_advantages=False, kl_in="reward")
    return worker_alignlab(spec, clock, lambda: train_rloo(config, progress=False))


def run_trl(spec: dict, clock) -> dict:
    def make_trainer(model, tokenizer, dataset, peft_config, callbacks):
        from trl import RLOOConfig, RLOOTrainer

        args = RLOOConfig(**trl_fields(spec), normalize_advantages=False)
        return RLOOTrainer(model=model, reward_funcs=trl_reward, args=args, train_dataset=dataset,
                           processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config)

    return worker_trl(spec, clock, make_trainer)


def header(spec: dict) -> str:
    return (f"RLOO: model {spec['model']}, mode {spec['mode']}, {spec['prompts_per_step']} prompts x group "
            f"{spec['group']} per step (one optimizer step per rollout), <= {spec['max_new_tokens']} new tokens, "
            f"beta {spec['beta']:g} (k1 in the reward), {spec['steps']} measured steps after {spec['warmup']}, "
            f"lr {spec['lr']:g} constant, float32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args.worker, args.spec, args.result, {"alignlab": run_alignlab, "trl": run_trl})
    compare(__file__, args, {"name": "rloo"}, header)


if __name__ == "__main__":
    main()
