def cost_section(pipeline):
    return {}
